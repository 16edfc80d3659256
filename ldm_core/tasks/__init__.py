"""The tasks: one module each, found here, iterated by the stack, the API, the CLI and the UI.

A task module (`ldm_core/tasks/<name>.py`) defines its request dataclass and a `TASK = Task(...)`
that says how a request is checked against the limits, how it calls its pipeline (keyword
arguments only), what its result's info records, and which pipeline classes may run it.
Adding a task is adding a module here, its pipeline, its tab and its catalog entries.

    tab (tabs/<task>.py) -> task module (here) -> pipeline (ldm_core/pipelines/<task>.py)
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Task:
    name: str                     # "text2img": the catalog's task, the API's endpoint, the CLI's command
    title: str                    # "Text → Image": the tab
    order: int                    # tab and listing order
    request: type                 # the request dataclass
    check: Callable               # (request with sampling checked, entry, limits) -> {field: checked value}
    call: Callable                # (pipeline, checked request, seeds, callback) -> PipelineOutput
    info: Callable                # (checked request) -> the task's own parameters, for the result's info
    output_size: Callable         # (checked request) -> (width, height, samples per image): the work done
    pipelines: Callable           # () -> {class name: pipeline class} that may run it (imported when called)
    positional: tuple[str, ...] = ()   # CLI: fields given as positional arguments
    api: tuple[str, ...] = ()     # API: the endpoint's parameters, in the contract's order (docs/api.md)
    api_defaults: dict[str, Any] | None = None  # API: a parameter's default where the dataclass's is None
    returns_one: bool = False     # API: one image back (super-resolution), not a gallery
    help: str = ""


def _discover() -> dict[str, Task]:
    found = []
    for mod in pkgutil.iter_modules(__path__):
        task = getattr(importlib.import_module(f"{__name__}.{mod.name}"), "TASK", None)
        if isinstance(task, Task):
            found.append(task)
    return {t.name: t for t in sorted(found, key=lambda t: t.order)}


TASKS: dict[str, Task] = _discover()


def task_of(request) -> Task:
    """The task a request dataclass belongs to."""
    for t in TASKS.values():
        if type(request) is t.request:
            return t
    from ..validation import RequestError
    raise RequestError(f"unknown request type {type(request).__name__}")


def pipeline_class(task: str, name: str) -> type:
    """The pipeline class `name` (a catalog entry's `pipeline`) among those that run `task`."""
    classes = TASKS[task].pipelines()
    if name not in classes:
        raise KeyError(f"pipeline {name!r} does not run {task}; one of {', '.join(classes)}")
    return classes[name]
