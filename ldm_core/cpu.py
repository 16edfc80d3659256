"""A fair share of a busy CPU: how many threads a generation uses while other programs run.

PyTorch's CPU kernels run on an OpenMP team whose threads spin at every barrier: fast on a
quiet machine, whole time slices wasted once another program holds a core. So `CpuShare`
watches how much of the machine the *other* processes use (from /proc/stat, less this
process's own time) and gives the team only the cores left to it, at least one, re-deciding
every `interval` seconds during a generation (figures: docs/design-notes.md and
docs/benchmarks.md; bench/run.py --sections contention measures it).

Where /proc/stat does not exist (macOS, Windows) or on CUDA/MPS the thread count is left alone.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import torch

STAT = "/proc/stat"


def _busy_seconds() -> tuple[float, float] | None:
    """(wall clock, CPU seconds all processes spent busy) now; None where /proc/stat is unknown."""
    try:
        with open(STAT) as f:
            fields = f.readline().split()[1:]
    except OSError:
        return None
    ticks = [int(x) for x in fields[:8]]          # user nice system idle iowait irq softirq steal
    busy = sum(ticks) - ticks[3] - ticks[4]
    return time.monotonic(), busy / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


@dataclass
class Sample:
    wall: float
    busy: float       # every process's CPU seconds
    own: float        # this process's


class CpuShare:
    """Decides the thread count of CPU generations from the other processes' recent load.

    `threads(others)`: the cores not used by others, rounded so that a program using less
    than `slack` of a core does not take a thread away, between 1 and `most`."""

    def __init__(self, most: int | None = None, interval: float = 0.2, slack: float = 0.4,
                 enabled: bool = True):
        self.most = most or torch.get_num_threads()
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.interval = interval
        self.slack = slack
        self.available = _busy_seconds() is not None     # /proc/stat is there to read
        self.enabled = enabled and self.available
        self._last: Sample | None = None
        self._lock = threading.Lock()
        self.current = self.most
        self.others = 0.0                 # cores the other processes used in the last window

    def threads(self, others: float) -> int:
        return max(1, min(self.most, int(self.cores - others + self.slack)))

    def _sample(self) -> Sample | None:
        now = _busy_seconds()
        return None if now is None else Sample(now[0], now[1], _own_seconds())

    def update(self, force: bool = False) -> int:
        """Re-decide if `interval` has passed since the last look (or `force`); the thread count."""
        if not self.enabled:
            return self.current
        with self._lock:
            last = self._last
            if not force and last is not None and time.monotonic() - last.wall < self.interval:
                return self.current
            now = self._sample()
            if now is None:
                return self.current
            self._last = now
            if last is None or now.wall - last.wall < 0.05:
                return self.current          # too short a window to say anything
            window = now.wall - last.wall
            self.others = max(0.0, (now.busy - last.busy) - (now.own - last.own)) / window
            threads = self.threads(self.others)
            if threads != torch.get_num_threads():     # (per thread: the one generating)
                torch.set_num_threads(threads)
            self.current = threads
            return threads

    def start(self) -> int:
        """At the start of a generation: decide from the window since the last look, and make the
        calling thread use that many (it may have had another count: a CLI's or a test's own thread)."""
        threads = self.update(force=True)
        if self.enabled and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return threads

    def wrap(self, callback):
        """A step callback that also re-decides the thread count, then calls `callback`."""
        if not self.enabled:
            return callback

        def on_step(step):
            self.update()
            return callback(step) if callback is not None else None
        return on_step
