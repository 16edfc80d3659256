"""Checking one task request before any image is decoded or any model runs.

`validate()` finds the request's task and catalog model, fills unset values from the model's
defaults, checks the shared sampling fields (`requests.py`) and hands the task's own fields to
its task module. The result, `Checked`, is what the stack runs and what a composition plans with.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .catalog import Catalog, CatalogError, ModelEntry
from .limits import DEFAULT_LIMITS, Limits
from .requests import RequestError, check_sampling
from .tasks import Task, task_of


@dataclass(frozen=True)
class Work:
    """The compute a request asks for: megapixel-steps, and how that product is made (for messages).
    A task request's also says what its steps and images are (`size`, `steps`, `images`, `per_step`:
    the megapixel-steps one step of all its images adds), so that a refusal can say what would fit."""
    megapixel_steps: float
    how: str
    size: str = ""
    steps: int = 0
    images: int = 0
    per_step: float = 0.0

    def __add__(self, other: "Work") -> "Work":
        """This work, then `other` (a later stage: its work counts, its steps are not this work's)."""
        return replace(self, megapixel_steps=self.megapixel_steps + other.megapixel_steps,
                       how=f"{self.how}, then {other.how}")

    def what_fits(self, budget: float) -> str:
        """What would fit `budget` at this size: fewer steps, or fewer images (every stage's work grows
        with the images), in words; "" where this work does not say."""
        if not (self.steps and self.images and self.per_step):
            return ""
        images = f"{self.images} image{'s' * (self.images > 1)}"
        steps = math.floor((budget - (self.megapixel_steps - self.steps * self.per_step)) / self.per_step + 1e-9)
        fit = max(0, math.floor(budget * self.images / self.megapixel_steps + 1e-9))
        out = (f"at {self.size} and {images}, at most {steps} step{'s fit' if steps > 1 else ' fits'}" if steps >= 1
               else f"at {self.size} and {images} not even one step fits")
        if fit >= 1 and self.images > 1:
            out += f"; or at most {fit} image{'s' * (fit > 1)} at {self.steps} steps"
        return out


@dataclass(frozen=True)
class Checked:
    """A task request with every default filled in and every field checked, and its model."""
    request: object
    entry: ModelEntry
    task: Task

    @property
    def work(self) -> Work:
        return work(self.request, self.task)


def validate(req, catalog: Catalog, limits: Limits = DEFAULT_LIMITS) -> Checked:
    """`req` checked against the catalog and the limits, its compute budget included (RequestError
    says what is wrong). A composition checks the budget of all its parts again, together."""
    if isinstance(req, Checked):
        return req
    task = task_of(req)
    if not isinstance(req.model, (str, type(None))) or (req.model and len(req.model) > 200):
        raise RequestError("model must be a catalog name")
    try:
        entry = catalog.get(req.model, task.name)
    except CatalogError as e:
        raise RequestError(str(e)) from None
    upd = check_sampling(req, entry, limits)
    upd.update(task.check(replace(req, **upd), entry, limits))
    checked = Checked(replace(req, **upd), entry, task)
    check_work(checked.work, limits, " or fewer samples averaged" if hasattr(req, "average") else "")
    return checked


def work(req, task: Task | None = None) -> Work:
    """Megapixel-steps of a checked request: output pixels x steps x images x samples averaged."""
    task = task or task_of(req)
    w, h, k = task.output_size(req)
    mp = w * h * req.steps * req.num_images * k / 1e6
    how = f"{w}x{h} pixels x {req.steps} steps x {req.num_images} image{'s' * (req.num_images > 1)}"
    return Work(mp, how + (f" x {k:g} {task.work_factor}" if k > 1 else ""), f"{w}x{h}", req.steps, req.num_images,
                mp / req.steps)


def check_work(total: Work, limits: Limits, hint: str = "") -> None:
    """`total` within the limits' compute budget per request."""
    if limits.max_work is None or total.megapixel_steps <= limits.max_work:
        return
    fits = total.what_fits(limits.max_work)
    raise RequestError(f"this request asks for {total.megapixel_steps:.1f} megapixel-steps ({total.how}); this "
                       f"server's compute budget is {limits.max_work:g} per request: "
                       + (f"{fits} (or use a smaller size{hint})" if fits else
                          f"use fewer steps or images, or a smaller size{hint}"))
