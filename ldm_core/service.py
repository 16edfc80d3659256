"""The studio's one entrance: validate -> plan (one task, or a registered composition of tasks)
-> run on the stack -> save. The tabs, the API and the command line call this and nothing below.

    service = Service(ModelStack(catalog))
    paths, info = service.generate(Text2ImgRequest(prompt="a red circle"))

The request path is four plain calls: tab -> `Service.generate` -> `ModelStack.run` ->
`Task.call` -> the pipeline. One deadline (`limits.max_seconds`) covers every stage of a request.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image

from . import compression
from .catalog import ModelEntry
from .compositions import COMPOSITIONS, Composition, Plan, composition_of
from .device import return_freed_memory
from .history import Entry, History, owner_folder
from .jobs import Job
from .limits import clear_deadline, with_deadline
from .loading import model_folder
from .pool import DevicePool
from .pipelines.common import StepCallback
from .prompts import TokenCount, count_tokens, expand, tokenizer_at
from .requests import RequestError
from .results import Result
from .stack import ModelStack
from .tasks import TASKS
from .throughput import Throughput, example_at
from .validation import check_work, validate

log = logging.getLogger("ldm_core.service")
timing = logging.getLogger("ldm_core.timing")   # one line per generation: bench/serving.py reads it
UNCERTAINTY = 4.0    # a time prediction may be this many times too high (docs/design-notes.md)


@dataclass
class Stage:
    """The model a running request is on now (its previews decode with that model's autoencoder)."""
    model: str | None = None


class Service:
    def __init__(self, stack: ModelStack | Sequence[ModelStack], remote=None):
        """On one stack, a stack per device (`pool.py`), or, with `remote` (`cluster.RayBackend`),
        generating on replicas elsewhere while this process checks, saves and keeps History."""
        self.pool = DevicePool([stack] if isinstance(stack, ModelStack) else stack)
        self.stack = stack = self.pool.stacks[0]     # the first: calibration, compression, loading files
        self.remote = remote
        self.catalog = stack.catalog
        self.limits = stack.limits
        self._history = History(stack.output_dir)
        self.throughput = Throughput()
        self._first_stages = compression.Loaded(stack.device, stack.dtype)   # perceptual compression's, kept

    @classmethod
    def from_catalog(cls, path=None, **stack_options) -> "Service":
        return cls(ModelStack.from_catalog(path, **stack_options))

    # ------------------------------------------------------------ what the UIs offer
    @property
    def device(self) -> str:
        if self.remote is not None:
            return self.remote.describe()
        return ", ".join(str(s.device) for s in self.pool.stacks)

    @property
    def concurrency(self) -> int:
        """How many generations run at once: one per device, or per replica on a cluster."""
        return self.remote.concurrency if self.remote is not None else len(self.pool)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks the catalog has a model for, in order."""
        return tuple(t for t in TASKS if self.catalog.for_task(t))

    def choices(self, task: str) -> list[tuple[str, str]]:
        """(label, name) for a model dropdown, each with what it takes to run here."""
        return self.catalog.choices(task, prefer_fp16=self.stack.dtype == torch.float16,
                                    allow_downloads=self.stack.allow_downloads)

    def entry(self, task: str, name: str | None = None) -> ModelEntry:
        """The catalog entry `name` of `task` (its default model when None)."""
        return self.catalog.get(name, task)

    def published_scheduler(self, entry: ModelEntry) -> str | None:
        return self.catalog.published_scheduler(entry)

    def count_tokens(self, task: str, model: str | None, prompt: str) -> TokenCount:
        """The tokens `prompt` (one pick of its wildcards) takes in the text encoder of `task`'s model
        `model` (its default when None), against what it reads; from its tokenizer alone, read once
        and kept. Raises ModelLoadError for a model not here, RequestError for one that reads no text."""
        entry = self.entry(task, model or None)
        tokenizers = self.__dict__.setdefault("_tokenizers", {})
        if entry.name not in tokenizers:
            root, _ = model_folder(self.catalog, entry, self.stack.dtype == torch.float16, allow_downloads=False)
            tokenizers[entry.name] = tokenizer_at(root)
        if tokenizers[entry.name] is None:
            raise RequestError(f"model {entry.name!r} reads no text")
        tokenizer, limit = tokenizers[entry.name]
        return count_tokens(tokenizer, limit, expand(prompt, 0))

    def compositions(self, task: str) -> list[Composition]:
        """The compositions a tab of `task` offers (hires, the x/y plot), those it can run here."""
        return [c for c in COMPOSITIONS.values() if task in c.tasks and all(t in self.tasks for t in c.needs)]

    def history(self, limit: int = 200, owner: str | None = None, everything: bool = False) -> list[Entry]:
        """The newest results of `owner` (of everyone with `everything`), newest first."""
        return self._history.entries(limit, owner, everything)

    @property
    def results(self) -> History:
        """The results browser: pages, search, favourites, deleting, zips (ldm_core/history.py)."""
        return self._history

    # ------------------------------------------------------------ requests
    def plan(self, request) -> Plan:
        """`request` checked, every part that can be before anything runs, the budget included."""
        comp = composition_of(request)
        if comp is None:
            checked = validate(request, self.catalog, self.limits)
            plan = Plan(request, [checked], checked.work)
        else:
            plan = comp.plan(request, self.catalog, self.limits)
            check_work(plan.work, self.limits)
        self._check_time(plan)
        return plan

    def _check_time(self, plan: Plan) -> None:
        """Refuse a plan predicted to run well past the time limit (models measured here: `calibrate`).
        A measurement taken while other programs held the CPU can over-predict a few times over, so
        only a prediction past UNCERTAINTY x the limit is refused; the per-step deadline stops the rest."""
        limit = self.limits.max_seconds
        estimates = [self.throughput.estimate(c, limit) for c in plan.first] if limit else []
        if not estimates or None in estimates or sum(e.seconds for e in estimates) <= UNCERTAINTY * limit:
            return
        total = sum(e.seconds for e in estimates)
        first = plan.first[0].request
        fit = (f"at this size and {first.num_images} image{'s' * (first.num_images > 1)}, at most "
               f"{estimates[0].steps_that_fit} steps fit" if len(estimates) == 1 and estimates[0].steps_that_fit
               else "no step fits at this size: use a smaller size or fewer images")
        raise RequestError(f"this request would take about {total:.0f} s here ({plan.work.how}); this server "
                           f"allows {limit:g} s per generation: {fit}")

    def calibrate(self, tasks=None) -> dict[str, str]:
        """Measure the default model of each task now, so that `plan` can refuse what would run past
        the time limit: {model: what was measured, or why not}."""
        done = {}
        for _ in self._calibrating(tasks, done):
            pass
        return done

    def calibrate_in_background(self) -> None:
        """`calibrate` on the device thread, one timed run at a time: each run goes to the back of the
        device's queue when it ends, so a visitor's request waits for one run at most."""
        runs = self._calibrating(None, {})

        def one():
            if next(runs, StopIteration) is not StopIteration:
                self.stack.submit(one)
        self.stack.submit(one)

    def _calibrating(self, tasks, done: dict):
        """Built-in models only: a hub model at eight times its size could take minutes on a CPU."""
        for name in tasks or self.tasks:
            entry = self.catalog.default(name)
            if entry.is_hub or not self.catalog.availability(entry)[0]:
                continue
            try:
                yield from self.throughput.measuring(self.stack.run,
                                                     example_at(TASKS[name], entry, self.catalog, self.limits))
                fit = self.throughput.fits[entry.name]
                done[entry.name] = (f"{fit.a:.3g} s/MP-step + {fit.b:.3g} s/MP²-step, "
                                    f"rest {fit.r:.3g} s + {fit.c:.3g} s/MP")
            except Exception as e:  # a model that cannot run here has no estimate; its requests say why
                done[entry.name] = f"not measured: {type(e).__name__}: {str(e)[:200]}"
            log.info("throughput of %s: %s", entry.name, done[entry.name])

    def run(self, request, callback: StepCallback | None = None, stage: Stage | None = None,
            stack: ModelStack | None = None) -> Result:
        """Plan `request` and run it on `stack` (the first when None) or on a replica, all its stages
        under one deadline."""
        plan = request if isinstance(request, Plan) else self.plan(request)
        if self.remote is not None:      # the replica plans it again and keeps the deadline
            return self.remote.run(plan.request, callback)
        callback = with_deadline(callback, self.limits.max_seconds)
        run_task = partial(self.run_task, stage=stage or Stage(), stack=stack or self.stack)
        comp = composition_of(plan.request)
        try:
            if comp is None:
                return run_task(plan.first[0], callback)
            return comp.run(plan, run_task, callback)
        finally:
            clear_deadline()

    def run_task(self, task_request, callback: StepCallback | None, stage: Stage,
                 stack: ModelStack | None = None) -> Result:
        """One task request of a plan (checked again if it was made while running, like hires'
        second stage) on `stack`; `stage` records its model for the previews."""
        checked = validate(task_request, self.catalog, self.limits)
        stage.model = checked.entry.name
        return (stack or self.stack).run(checked, callback)

    def save(self, result: Result, owner: str | None = None) -> list[Path]:
        """The result's PNGs, in its owner's folder (`owner`: who made it; None: the output folder)."""
        folder = self.stack.output_dir / owner_folder(owner) if owner else None
        return self.stack.save(result, folder)

    def generate(self, request, callback: StepCallback | None = None, stage: Stage | None = None,
                 owner: str | None = None, stack: ModelStack | None = None) -> tuple[list[Path], dict]:
        """Run `request` (on `stack`) and save its images for `owner`: (PNG paths, the request as run)."""
        t0, start = time.perf_counter(), time.time()
        try:
            result = self.run(request, callback, stage, stack)
            t1 = time.perf_counter()
            paths = self.save(result, owner)
        finally:
            return_freed_memory()
        timing.info("%s from %.4f: run %.4f s (pipeline %.4f s), save %.4f s", result.info.get("task"), start,
                    t1 - t0, result.seconds, time.perf_counter() - t1)
        return paths, result.info

    def start(self, request, previews: bool = True, abandoned: Callable[[], bool] | None = None,
              owner: str | None = None) -> Job:
        """`generate(request)` on a device's thread (`pool.py`: a free one that holds its model, else
        the least loaded), or sent to a replica, as a Job: its progress, previews and cancel."""
        if self.remote is not None:      # a step's `latents` is the replica's preview image already
            return Job(lambda callback: self.generate(request, callback, owner=owner),
                       (lambda look: look if isinstance(look, Image.Image) else None) if previews else None,
                       self.remote.submit, abandoned)
        try:
            plan = self.plan(request)
        except Exception:     # said when it runs, where every error of a job is said
            plan = None
        stage, stack = Stage(), self.pool.reserve([c.entry.name for c in plan.first] if plan else [])

        def preview(latents):
            return None if stage.model is None else stack.preview(stage.model, latents)
        return Job(lambda callback: self.generate(plan or request, callback, stage, owner, stack),
                   preview if previews else None, partial(self.pool.submit, stack), abandoned)

    # ------------------------------------------------------------ perceptual compression (paper §3.1, §4.1)
    def autoencoders(self) -> list[compression.Autoencoder]:
        """Every first stage there is: built-ins, the f trade-off's, the zoo's (unconverted ones not ready)."""
        return compression.autoencoders(self.catalog.root)

    def compress(self, image, names) -> list[compression.RoundTrip]:
        """`image` (a path, bytes, PIL image or upload) encoded and decoded by each autoencoder of
        `names`, one at a time on the device thread: the reconstructions and what they kept."""
        image = compression.check_image(image, self.limits)
        chosen = compression.pick(self.autoencoders(), names)

        def one(ae):
            with self.stack.device_lock():
                self.stack.cpu.start()
                with_deadline(None, self.limits.max_seconds)
                try:
                    return compression.run(self._first_stages, ae, image)
                finally:
                    clear_deadline()
                    return_freed_memory()
        return [self.stack.submit(one, ae).result() for ae in chosen]

    def submit(self, fn, *args):
        """`fn(*args)` on the device thread (loading a model before serving, say)."""
        return self.stack.submit(fn, *args)

