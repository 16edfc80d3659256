"""Compositions: plans over task requests, registered like the tasks (one module each, found
here), so the service, the API, the CLI and the UI find them without special cases.

- hires (`hires.py`): a text or layout request's images, each upscaled 4x in the same request;
- x/y plot (`xyplot.py`): one parameter of a text request against another, as one grid.

The service plans a request with the composition that applies to it (or runs it as one task).
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import Composition, Option, Plan

__all__ = ["COMPOSITIONS", "Composition", "Option", "Plan", "composition_of"]


def _discover() -> dict[str, Composition]:
    found = {}
    for mod in pkgutil.iter_modules(__path__):
        comp = getattr(importlib.import_module(f"{__name__}.{mod.name}"), "COMPOSITION", None)
        if isinstance(comp, Composition):
            found[comp.name] = comp
    return found


COMPOSITIONS: dict[str, Composition] = _discover()


def composition_of(request) -> Composition | None:
    """The composition that runs `request`, or None: it is one task request."""
    return next((c for c in COMPOSITIONS.values() if c.applies(request)), None)
