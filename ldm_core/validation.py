"""Checking one task request before any image is decoded or any model runs.

`validate()` finds the request's task and catalog model, fills unset values from the model's
defaults, checks the shared sampling fields (`requests.py`) and hands the task's own fields to
its task module. The result, `Checked`, is what the stack runs and what a composition plans with.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .catalog import Catalog, CatalogError, ModelEntry
from .limits import DEFAULT_LIMITS, Limits
from .requests import RequestError, check_sampling
from .tasks import Task, task_of


@dataclass(frozen=True)
class Work:
    """The compute a request asks for: megapixel-steps, and how that product is made (for messages)."""
    megapixel_steps: float
    how: str

    def __add__(self, other: "Work") -> "Work":
        return Work(self.megapixel_steps + other.megapixel_steps, f"{self.how}, then {other.how}")


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
    w, h, k = (task or task_of(req)).output_size(req)
    mp = w * h * req.steps * req.num_images * k / 1e6
    how = f"{w}x{h} pixels x {req.steps} steps x {req.num_images} image{'s' * (req.num_images > 1)}"
    return Work(mp, how + (f" x {k} samples averaged" if k > 1 else ""))


def check_work(total: Work, limits: Limits, hint: str = "") -> None:
    """`total` within the limits' compute budget per request."""
    if limits.max_work is None or total.megapixel_steps <= limits.max_work:
        return
    raise RequestError(f"this request asks for {total.megapixel_steps:.1f} megapixel-steps ({total.how}); this "
                       f"server's compute budget is {limits.max_work:g} per request: use fewer steps or images, "
                       f"or a smaller size{hint}")
