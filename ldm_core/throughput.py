"""How long a request will take on this device, from the model's own speed measured here.

A model's time per image and step grows with the output's pixels P (megapixels) twice over:
convolutions as P, attention as P². `measure()` times a model's example request at three sizes
(its native side, four and eight times that) and fits seconds = s + a·P + b·P² per image-step,
plus a per-image rest (text encoding, decode) r + c·P, all non-negative; `estimate()` then
predicts a checked request (within a factor of about two: docs/design-notes.md). The service
refuses a request predicted to run past the time limit before it starts, and says how
many steps would fit. A model not measured yet has no prediction (the compute budget in
megapixel-steps still applies).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import nnls

from .validation import Checked, validate

SCALES = (1, 4, 8)        # the sizes timed, in native sides (attention shows only at the large ones)
STEPS = 4                 # steps at each size (their intervals are timed)


@dataclass(frozen=True)
class Fit:
    a: float              # s per image-step per megapixel (convolutions)
    b: float              # s per image-step per megapixel² (attention)
    c: float              # s per image per megapixel outside the steps (decode)
    r: float = 0.0        # s per image outside the steps whatever the size (encoders)
    s: float = 0.0        # s per image-step whatever the size (the scheduler, small kernels)

    def step(self, mp: float) -> float:
        return self.s + self.a * mp + self.b * mp * mp


@dataclass(frozen=True)
class Estimate:
    seconds: float
    steps_that_fit: int   # at this size and batch, within `limit` seconds


class Throughput:
    def __init__(self):
        self.fits: dict[str, Fit] = {}

    def measure(self, run_task, checked_at) -> Fit:
        """Fit one model: `checked_at(scale)` is its example request at `scale` times its native side,
        checked; `run_task(checked, callback)` runs it (on the device thread)."""
        for _ in self.measuring(run_task, checked_at):
            pass
        return self.fits[checked_at(1).entry.name]

    def measuring(self, run_task, checked_at):
        """`measure`, one run at a time: a generator that yields after each run (so that a caller can
        let other work go first between them), and records the fit at its end."""
        run_task(checked_at(1), None)            # loaded and warm: neither counts
        yield
        points = []
        for scale in SCALES:
            checked = checked_at(scale)
            stamps: list[float] = []
            t0 = time.perf_counter()
            run_task(checked, lambda step: stamps.append(time.perf_counter()))
            total = time.perf_counter() - t0
            per_step = min(b - a for a, b in zip(stamps, stamps[1:]))     # the least disturbed step
            w, h, k = checked.task.output_size(checked.request)
            points.append((w * h * k / 1e6, per_step, max(0.0, total - per_step * len(stamps))))
            yield
        mp = np.array([p[0] for p in points])
        (s0, a, b), _ = nnls(np.stack([np.ones_like(mp), mp, mp * mp], 1), np.array([p[1] for p in points]))
        (r, c), _ = nnls(np.stack([np.ones_like(mp), mp], 1), np.array([p[2] for p in points]))
        self.fits[checked.entry.name] = Fit(a, b, c, r, s0)

    def estimate(self, checked: Checked, limit: float | None = None) -> Estimate | None:
        """The seconds `checked` will take here, and how many of its steps would fit in `limit`."""
        fit = self.fits.get(checked.entry.name)
        if fit is None:
            return None
        req = checked.request
        w, h, k = checked.task.output_size(req)
        mp = w * h / 1e6
        images = req.num_images * k
        rest = images * (fit.r + fit.c * mp)
        seconds = images * req.steps * fit.step(mp) + rest
        room = (limit - rest) / (images * fit.step(mp)) if limit and fit.step(mp) > 0 else req.steps
        return Estimate(seconds, max(0, min(req.steps, int(room))))


def example_at(task, entry, catalog, limits):
    """`checked_at(scale)` for `measure`: the task's example request for the model `entry` at
    `scale` times its native side (within the size limit), STEPS steps, one image."""
    unbounded = replace(limits, max_work=None)

    def checked_at(scale: int) -> Checked:
        side = min(entry.width * scale, limits.max_side)
        request = task.example_request(side, steps=STEPS, seed=0, model=entry.name)
        return validate(request, catalog, unbounded)
    return checked_at
