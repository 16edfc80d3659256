"""The training loop every stage runs: `start` (threads, run folder, accelerate, seed), `resume`
(checkpoint, config.json, loss log), `Budget` and `cosine_lr` (linear warm-up, then cosine down to
10 % of the rate over the step budget, or the time budget if that ends first), `step_loop` (steps,
log rows, sample grids and checkpoints every few minutes, a stop at the time limit, a last
checkpoint and evaluation). The diffusion stages' shared machinery is in `diffusion.py`.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from .common import Checkpoint, LossLog, RunConfig, Timer, apply_threads, config_dict, ensure_dir, save_json


def start(cfg: RunConfig) -> tuple[Accelerator, Path]:
    """Torch threads, the run folder, the accelerator (one process or `accelerate launch`), the seed."""
    apply_threads(cfg.threads)
    out = ensure_dir(cfg.out)
    acc = Accelerator()
    torch.manual_seed(cfg.seed)
    return acc, out


def resume(acc: Accelerator, out: Path, cfg: RunConfig) -> tuple[Checkpoint, LossLog]:
    """Continue from <out>/checkpoint if there is one (everything it restores must be prepared or
    registered with `acc` first); write config.json; open the loss log."""
    ckpt = Checkpoint(acc, out)
    ckpt.resume()
    save_json(out / "config.json", config_dict(cfg))
    return ckpt, LossLog(out)


class Budget:
    """A run's step budget and optional time budget (`max_minutes`, 0 = none), counted in wall-clock
    time or (`cpu_clock`) in this process's CPU time."""

    def __init__(self, steps: int, max_minutes: float, cpu_clock: bool = False):
        self.clock = time.process_time if cpu_clock else time.monotonic
        self.steps = steps
        self.seconds = max_minutes * 60
        self.started = self.clock()

    def progress(self, step: int) -> float:
        """The share of the budget spent: of the steps, or of the time if that is further along."""
        p = step / self.steps
        return max(p, min(1.0, (self.clock() - self.started) / self.seconds)) if self.seconds else p

    def time_up(self) -> bool:
        return bool(self.seconds) and self.clock() - self.started > self.seconds


def cosine_lr(base: float, step: int, warmup: int, progress: float) -> float:
    """Linear warm-up over `warmup` steps, then a cosine from `base` to 0.1 `base` as progress goes 0 -> 1."""
    return base * min(1.0, (step + 1) / warmup) * (0.55 + 0.45 * math.cos(math.pi * progress))


def step_loop(acc: Accelerator, cfg: RunConfig, ckpt: Checkpoint, log: LossLog, budget: Budget,
              train_step: Callable[[int], dict], evaluate: Callable[[], None], *,
              after_checkpoint: Callable[[], None] | None = None, log_last: bool = False) -> None:
    """Call `train_step(step)` from the checkpoint's step to `cfg.steps` or the time limit. Its
    returned values (floats or 0-d tensors) are logged every `cfg.log_every` steps (and at the last
    step with `log_last`) with the throughput; `evaluate` runs every `cfg.sample_minutes` and at the
    end, a checkpoint is saved every `cfg.checkpoint_minutes` and at the end."""
    state = ckpt.state
    bar = tqdm(total=cfg.steps, initial=state["step"], disable=not acc.is_main_process, dynamic_ncols=True)
    ckpt_timer = Timer(cfg.checkpoint_minutes)
    sample_timer = Timer(cfg.sample_minutes)
    t_last = time.monotonic()
    n_last = 0
    while state["step"] < cfg.steps:
        row = train_step(state["step"])
        state["step"] += 1
        n_last += cfg.batch_size * acc.num_processes
        bar.update(1)
        if state["step"] % cfg.log_every == 0 or (log_last and state["step"] == cfg.steps):
            now = time.monotonic()
            row = {k: float(v) for k, v in row.items()}
            row["img_s"] = n_last / (now - t_last)
            t_last = now
            n_last = 0
            if acc.is_main_process:
                log.add({"step": state["step"], **row})
            bar.set_postfix({k: f"{v:.4g}" for k, v in row.items()})
        if sample_timer.due():
            evaluate()
        if ckpt_timer.due():
            ckpt.save()
            if after_checkpoint:
                after_checkpoint()
        if budget.time_up():
            acc.print("time limit reached; checkpointing")
            break
    bar.close()
    ckpt.save()
    evaluate()
