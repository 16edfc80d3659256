"""A request running on the device thread, seen from the thread that waits for it.

Iterating a `Job` yields `Progress` while it runs (a step count, the stage it is in, the time
spent and left, and at most every PREVIEW_SECONDS a preview), then one `Done`; an error is raised
in the waiting thread. Updates are timed, not one per step: each wakes the waiting threads beside
the generation (docs/benchmarks.md, "the request path"). Closing the job, or an `abandoned()`
that turns true (nobody reads the updates), sets the cancel flag; the pipeline stops at its next
step. `partial()` is what a stopped job had: the images its stages finished, its last preview.

A request of several stages (a composition: hires denoises, then upscales each image) names them:
it wraps each stage's step callback with `phased(callback, Phase(...))`, so that its steps say
which stage they are of, what share of the work each stage is, and which images are finished.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from .pipelines.common import GenerationCancelled, StepCallback, StepInfo

__all__ = ["Done", "GenerationCancelled", "Job", "Partial", "Phase", "PhaseStep", "Progress", "TimeLeft", "duration",
           "phased"]
log = logging.getLogger("ldm_core.jobs")

FIRST_UPDATE_SECONDS = 1.0  # a running job's first update comes after this long (a shorter job sends none),
UPDATE_SECONDS = 0.25       # then one at most this often,
PREVIEW_SECONDS = 0.5       # and a live preview at most this often


@dataclass
class Phase:
    """The stage of a request its steps belong to. A plain task request is one: "denoising"."""
    name: str = "denoising"
    index: int = 1                    # 1-based, of `count`
    count: int = 1
    share: float = 1.0                # this stage's share of the request's work (for the time left)
    later: tuple = ()                 # (name, share) of each stage still to come
    finished: list = field(default_factory=list)    # images finished so far (the composition's, growing)
    finished_info: list = field(default_factory=list)   # and the parameters of each
    images: int = 0                   # how many images the request makes (0: not said)
    label: str = ""                   # what a user reads ("upscaling 1 of 2"); the name when empty

    @property
    def done_before(self) -> float:
        """The share of the request's work done before this stage."""
        return max(0.0, 1.0 - self.share - sum(share for _, share in self.later))


@dataclass
class PhaseStep(StepInfo):
    """A step of a stage of a request of several (`phased`)."""
    phase: Phase = field(default_factory=Phase)


def phased(callback: StepCallback | None, phase: Phase) -> StepCallback | None:
    """`callback`, seeing each step as a step of `phase`."""
    if callback is None:
        return None

    def on_step(s: StepInfo):
        return callback(PhaseStep(s.step, s.total, s.timestep, s.latents, phase))
    return on_step


@dataclass
class Progress:
    step: int
    total: int
    preview: object | None = None     # a PIL image of the first image so far, when one was due
    phase: str = "denoising"          # the stage this step is of (a composition's: "upscaling")
    phase_index: int = 1              # 1-based, of `phases`
    phases: int = 1
    elapsed: float = 0.0              # seconds since the job started running
    eta: float | None = None          # seconds left, from the steps' measured pace; None: not known yet
    fraction: float = 0.0             # of the whole request's work done
    untimed: tuple = ()               # names of stages to come that `eta` leaves out (not run yet)

    def describe(self) -> str:
        """One line for a person: "upscaling 1 of 2 · step 10/50 · 3.1 s elapsed · about 6 s left"."""
        left = "estimating the time left" if self.eta is None else f"about {duration(self.eta)} left"
        if self.eta is not None and self.untimed:
            counts = {n: self.untimed.count(n) for n in dict.fromkeys(self.untimed)}
            left += ", then " + ", ".join(f"{n} ×{k}" if k > 1 else n for n, k in counts.items()) + " (not timed yet)"
        return f"{self.phase} · step {self.step}/{self.total} · {duration(self.elapsed)} elapsed · {left}"


def duration(seconds: float) -> str:
    """3.1 s, 42 s, 2 min 05 s."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s"


@dataclass
class Done:
    paths: list[Path]
    info: dict


@dataclass
class Partial:
    """What a job had when it stopped: the images it finished (with their parameters), how many
    it was to make (0: not said), its last preview and the step it was at."""
    images: list
    infos: list
    expected: int
    preview: object | None
    step: int
    total: int
    phase: Phase


class TimeLeft:
    """Seconds left, from the pace measured in this job: the rest of this stage at its steps' pace
    (plus what a whole stage of its kind took beyond its steps: decoding, the next one's set-up, once
    one has ended), and each stage to come at the pace of its kind. A kind not run yet is not
    guessed (a super-resolution step is no denoising step): `untimed` names those stages."""

    def __init__(self):
        self._per_step: dict[str, float] = {}   # stage name -> seconds per step
        self._whole: dict[str, float] = {}      # stage name -> seconds per unit of work share, whole stages
        self._first: tuple | None = None        # (phase, step, time) of this stage's first step seen
        self.untimed: tuple[str, ...] = ()      # the stages to come not counted in the time left

    def update(self, phase: Phase, step: int, total: int, now: float) -> float | None:
        if self._first is None or self._first[0] is not phase or step < self._first[1]:
            self._ended(now)
            self._first = (phase, step, now)
        _, s0, t0 = self._first
        if step > s0:
            self._per_step[phase.name] = (now - t0) / (step - s0)
        per_step = self._per_step.get(phase.name)
        if per_step is None or total <= 0:
            self.untimed = ()
            return None
        whole = self._whole.get(phase.name, per_step * total / max(phase.share, 1e-9))
        left = (total - step) * per_step + max(0.0, whole * phase.share - per_step * total)
        later = [(name, self._whole.get(name, whole if name == phase.name else None)) for name, _ in phase.later]
        self.untimed = tuple(name for name, rate in later if rate is None)
        return left + sum(share * rate for (_, share), (_, rate) in zip(phase.later, later) if rate is not None)

    def _ended(self, now: float) -> None:
        """The stage of the steps so far is over: how long it took, the steps before the first seen too."""
        if self._first is None:
            return
        phase, s0, t0 = self._first
        per_step = self._per_step.get(phase.name)
        if per_step is not None:
            self._whole[phase.name] = (now - t0 + per_step * s0) / max(phase.share, 1e-9)


class Job:
    def __init__(self, generate: Callable, preview: Callable | None, submit: Callable,
                 abandoned: Callable[[], bool] | None = None):
        """`generate(step_callback) -> (paths, info)` runs on the device thread (`submit(fn)`);
        `preview(latents)` looks at the latents of a step, or is None: no previews."""
        self._events: queue.Queue = queue.Queue()
        self._cancel = threading.Event()
        self._ended = threading.Event()       # the generation is over, however it ended
        self._generate = generate
        self._preview = preview
        self._abandoned = abandoned
        self._due_update = time.monotonic() + FIRST_UPDATE_SECONDS
        self._due_preview = 0.0
        self._started: float | None = None
        self._time_left = TimeLeft()
        self._phase = Phase()                 # the stage of the last step (a plain request: its only one)
        self._last = (0, 0)                   # its step, of total
        self._last_preview = None
        submit(self._work)

    def cancel(self) -> None:
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the generation is over (done, failed or stopped): whether it is."""
        return self._ended.wait(timeout)

    def partial(self) -> Partial:
        """What the job has so far (safe from any thread): finished images, last preview, its step."""
        p = self._phase
        return Partial(list(p.finished), list(p.finished_info), p.images, self._last_preview, *self._last, p)

    def _on_step(self, s: StepInfo) -> bool:
        now = time.monotonic()
        phase = getattr(s, "phase", None) or self._phase
        self._phase, self._last = phase, (s.step, s.total)
        eta = self._time_left.update(phase, s.step, s.total, now)
        if self._cancel.is_set():               # stopping here: what the interrupted image looked like
            self._due_preview = 0.0
            self._look(s, now)
            return True
        if s.step < s.total and now >= self._due_update:
            self._due_update = now + UPDATE_SECONDS
            if not self._cancel.is_set() and self._abandoned is not None and self._abandoned():
                log.info("a client stopped reading its updates: generation cancelled at step %d", s.step)
                self._cancel.set()
            fraction = phase.done_before + phase.share * s.step / max(s.total, 1)
            self._events.put(Progress(s.step, s.total, self._look(s, now), phase.label or phase.name, phase.index,
                                      phase.count, now - (self._started or now), eta, fraction,
                                      self._time_left.untimed))
        return self._cancel.is_set()

    def _look(self, s: StepInfo, now: float):
        if self._preview is None or now < self._due_preview:
            return None
        self._due_preview = now + PREVIEW_SECONDS
        try:
            image = self._preview(s.latents)
        except Exception:  # a preview is never worth failing a generation
            return None
        self._last_preview = image if image is not None else self._last_preview
        return image

    def _work(self) -> None:
        if self._cancel.is_set():           # stopped while it waited for the device
            self._events.put(GenerationCancelled("cancelled before it started"))
            self._ended.set()
            return
        self._started = time.monotonic()
        try:
            self._events.put(Done(*self._generate(self._on_step)))
        except BaseException as e:  # handed to the waiting thread
            self._events.put(e)
        finally:
            self._ended.set()

    def __iter__(self) -> Iterator[Progress | Done]:
        try:
            while True:
                ev = self._events.get()
                if isinstance(ev, BaseException):
                    raise ev
                yield ev
                if isinstance(ev, Done):
                    return
        finally:
            self._cancel.set()
