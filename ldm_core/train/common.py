"""Pieces every training stage shares: run folders, resumable state, the loss log and its plot."""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch


@dataclass
class RunConfig:
    """Options common to every stage (each stage's config extends it)."""
    out: str = "runs/stage"            # run folder: checkpoints, samples, loss plot, log
    steps: int = 1000                  # total optimizer steps
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    log_every: int = 25
    checkpoint_minutes: float = 5.0    # save a resumable checkpoint this often (and at the end)
    sample_minutes: float = 5.0        # write a sample grid + loss plot this often
    threads: int = 0                   # torch CPU threads (0 = leave the default)
    max_minutes: float = 0.0           # stop (after checkpointing) after this long; 0 = no limit
    cpu_clock: bool = False            # count max_minutes in CPU time of this process, not wall-clock
                                       # (a budget that sharing the machine does not shrink)


def apply_threads(n: int) -> None:
    if n > 0:
        torch.set_num_threads(n)


class LossLog:
    """Appends JSON lines to <out>/log.jsonl and draws <out>/loss.png from them."""

    def __init__(self, out: Path):
        self.path = out / "log.jsonl"
        self.rows: list[dict] = []
        if self.path.exists():
            self.rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def add(self, row: dict) -> None:
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def plot(self, png: Path, keys: list[str] | None = None) -> None:
        if not self.rows:
            return
        import matplotlib  # lazy: matplotlib: only for plots, and slow to import
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # lazy: matplotlib: only for plots, and slow to import
        keys = keys or sorted({k for r in self.rows for k in r if k not in ("step", "time", "img_s")})
        fig, axes = plt.subplots(len(keys), 1, figsize=(7, 2.2 * len(keys)), squeeze=False)
        for ax, k in zip(axes[:, 0], keys):
            pts = [(r["step"], r[k]) for r in self.rows if k in r and r[k] is not None]
            if pts:
                x, y = zip(*pts)
                ax.plot(x, y, lw=0.8)
                if k.startswith("loss") and min(y) > 0:
                    ax.set_yscale("log")
            ax.set_ylabel(k, fontsize=8)
        axes[-1, 0].set_xlabel("step")
        fig.tight_layout()
        fig.savefig(png, dpi=80)
        plt.close(fig)


class Timer:
    """Fires every `minutes` (monotonic)."""

    def __init__(self, minutes: float):
        self.period = minutes * 60
        self.last = time.monotonic()

    def due(self) -> bool:
        if self.period > 0 and time.monotonic() - self.last >= self.period:
            self.last = time.monotonic()
            return True
        return False


def save_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str))


def config_dict(cfg) -> dict:
    return asdict(cfg)


def ensure_dir(p: str | os.PathLike) -> Path:
    p = Path(p)
    p.mkdir(parents=True, exist_ok=True)
    return p


class Checkpoint:
    """A resumable training state in <out>/checkpoint: accelerate's state (models in
    safetensors, optimizers, RNG) plus `trainer.json` with the step counter."""

    def __init__(self, acc, out: Path):
        self.acc = acc
        self.path = out / "checkpoint"
        self.state = {"step": 0}

    def resume(self) -> int:
        if (self.path / "trainer.json").exists():
            self.acc.load_state(str(self.path))
            self.state = json.loads((self.path / "trainer.json").read_text())
            self.acc.print(f"resumed from {self.path} at step {self.state['step']}")
        return self.state["step"]

    def save(self) -> None:
        self.acc.save_state(str(self.path), safe_serialization=True)
        if self.acc.is_main_process:
            save_json(self.path / "trainer.json", self.state)
