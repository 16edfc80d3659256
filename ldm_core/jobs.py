"""A request running on the device thread, seen from the thread that waits for it.

Iterating a `Job` yields `Progress` while it runs (a step count and, at most every
PREVIEW_SECONDS, a preview), then one `Done`; an error is raised in the waiting thread.
Updates are timed, not one per step: each wakes the waiting threads beside the generation
(docs/benchmarks.md, "the request path"). Closing the job, or an `abandoned()` that turns true
(nobody reads the updates), sets the cancel flag; the pipeline stops at its next step.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .pipelines.common import GenerationCancelled, StepInfo

log = logging.getLogger("ldm_core.jobs")

FIRST_UPDATE_SECONDS = 1.0  # a running job's first update comes after this long (a shorter job sends none),
UPDATE_SECONDS = 0.25       # then one at most this often,
PREVIEW_SECONDS = 0.5       # and a live preview at most this often


@dataclass
class Progress:
    step: int
    total: int
    preview: object | None = None     # a PIL image of the first image so far, when one was due


@dataclass
class Done:
    paths: list[Path]
    info: dict


class Job:
    def __init__(self, generate: Callable, preview: Callable | None, submit: Callable,
                 abandoned: Callable[[], bool] | None = None):
        """`generate(step_callback) -> (paths, info)` runs on the device thread (`submit(fn)`);
        `preview(latents)` looks at the latents of a step, or is None: no previews."""
        self._events: queue.Queue = queue.Queue()
        self._cancel = threading.Event()
        self._generate = generate
        self._preview = preview
        self._abandoned = abandoned
        self._due_update = time.monotonic() + FIRST_UPDATE_SECONDS
        self._due_preview = 0.0
        submit(self._work)

    def cancel(self) -> None:
        self._cancel.set()

    def _on_step(self, s: StepInfo) -> bool:
        now = time.monotonic()
        if s.step < s.total and now >= self._due_update:
            self._due_update = now + UPDATE_SECONDS
            if not self._cancel.is_set() and self._abandoned is not None and self._abandoned():
                log.info("a client stopped reading its updates: generation cancelled at step %d", s.step)
                self._cancel.set()
            self._events.put(Progress(s.step, s.total, self._look(s, now)))
        return self._cancel.is_set()

    def _look(self, s: StepInfo, now: float):
        if self._preview is None or now < self._due_preview:
            return None
        self._due_preview = now + PREVIEW_SECONDS
        try:
            return self._preview(s.latents)
        except Exception:  # a preview is never worth failing a generation
            return None

    def _work(self) -> None:
        if self._cancel.is_set():           # stopped while it waited for the device
            self._events.put(GenerationCancelled("cancelled before it started"))
            return
        try:
            self._events.put(Done(*self._generate(self._on_step)))
        except BaseException as e:  # handed to the waiting thread
            self._events.put(e)

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
