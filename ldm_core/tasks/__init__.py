"""The tasks: one module each, found here; the stack, the API, the CLI and the UI iterate them.

A task module (`ldm_core/tasks/<name>.py`) defines its request dataclass and a `TASK = Task(...)`
(`base.py`) that says how a request is checked against the limits, how it calls its pipeline
(keyword arguments only), what its result's info records, and which pipeline classes may run it.
Adding a task is adding a module here, its pipeline, its tab and its catalog entries.

    tab (tabs/<task>.py) -> service -> stack -> task module (here) -> pipeline (ldm_core/pipelines/<task>.py)
"""
from __future__ import annotations

import importlib
import pkgutil

from ..requests import RequestError
from .base import Task

__all__ = ["TASKS", "Task", "task_of", "pipeline_class"]


def _discover() -> dict[str, Task]:
    found = []
    for mod in pkgutil.iter_modules(__path__):
        task = getattr(importlib.import_module(f"{__name__}.{mod.name}"), "TASK", None)
        if isinstance(task, Task):
            found.append(task)
    return {t.name: t for t in sorted(found, key=lambda t: t.order)}


TASKS: dict[str, Task] = _discover()


def task_of(request) -> Task:
    """The task a request dataclass belongs to (looked up at call time: tests may wrap a task)."""
    for t in TASKS.values():
        if type(request) is t.request:
            return t
    raise RequestError(f"unknown request type {type(request).__name__}")


def pipeline_class(task: str, name: str) -> type:
    """The pipeline class `name` (a catalog entry's `pipeline`) among those that run `task`."""
    classes = TASKS[task].pipelines
    if name not in classes:
        raise KeyError(f"pipeline {name!r} does not run {task}; one of {', '.join(classes)}")
    return classes[name]
