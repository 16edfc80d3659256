"""Several devices in one process: a resident `ModelStack` and a device thread per device.

    pool = DevicePool([ModelStack(catalog, device="cuda:0"), ModelStack(catalog, device="cuda:1")])
    stack = pool.reserve(["shapes-text2img"])     # the device this request runs on
    future = pool.submit(stack, fn)               # fn() on that device's thread

A request goes to a free device that already holds its model; else to a free device; else to the
least loaded one (the fewest requests reserved and not finished; the first on a tie). Each stack
keeps its own models, its own lock and its own thread, so two requests on two devices run at the
same time, and a request stopped on one leaves the other running. Noise is drawn on the CPU from
each image's seed (`pipelines/common.py`), so a seed gives the same image on whichever device of a
kind runs it.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from typing import Sequence

import torch

from .stack import ModelStack

__all__ = ["DevicePool", "device_list", "threads_per_device"]


class DevicePool:
    def __init__(self, stacks: Sequence[ModelStack]):
        if not stacks:
            raise ValueError("a device pool needs at least one stack")
        self.stacks = list(stacks)
        self._load = [0] * len(self.stacks)      # requests reserved and not finished, per stack
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.stacks)

    def loads(self) -> list[int]:
        with self._lock:
            return list(self._load)

    def reserve(self, models: Sequence[str] = ()) -> ModelStack:
        """The stack a request of `models` runs on, counted as busy until `submit`'s work ends
        (or `release`)."""
        with self._lock:
            free = [i for i, n in enumerate(self._load) if n == 0]
            holding = [i for i in free if all(self.stacks[i].holds(m) for m in models)] if models else []
            i = (holding or free or [min(range(len(self._load)), key=self._load.__getitem__)])[0]
            self._load[i] += 1
            return self.stacks[i]

    def release(self, stack: ModelStack) -> None:
        with self._lock:
            i = self.stacks.index(stack)
            self._load[i] = max(0, self._load[i] - 1)

    def submit(self, stack: ModelStack, fn, *args) -> Future:
        """`fn(*args)` on `stack`'s device thread; the reservation ends when it does."""
        future = stack.submit(fn, *args)
        future.add_done_callback(lambda _: self.release(stack))
        return future

    def describe(self) -> list[dict]:
        loads = self.loads()
        return [{**s.describe(), "running_or_waiting": n} for s, n in zip(self.stacks, loads)]


def device_list(spec: str | None) -> list[str]:
    """`--devices`: "cuda:0,cuda:1", "cpu,cpu" (two CPU stacks), or "all" (every CUDA device, else
    the one device `pick_device` finds). Empty or None: one device, chosen as before."""
    if not spec:
        return []
    if spec.strip() == "all":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [f"cuda:{i}" for i in range(n)] or ["auto"]
    names = [d.strip() for d in spec.split(",") if d.strip()]
    for d in names:
        try:
            dev = torch.device(d)
        except RuntimeError:
            raise ValueError(f"--devices: {d!r} is not a device (cpu, cuda:0, cuda:1, mps, or all)") from None
        if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
            have = torch.cuda.device_count() if torch.cuda.is_available() else 0
            raise ValueError(f"--devices: {d} is not here (this machine has {have} CUDA device"
                             f"{'s' * (have != 1)})")
    return names


def threads_per_device(devices: Sequence[str]) -> int | None:
    """CPU threads for each CPU stack: the cores shared out between them (None: one CPU stack or
    none, which uses every core as a single stack does)."""
    cpus = sum(1 for d in devices if torch.device(d if d != "auto" else "cpu").type == "cpu")
    if cpus < 2:
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // cpus)
