"""The panels of the compositions a task's tab offers (hires, the x/y plot), found by name: the
composition `name` has its panel in `tabs/<name>.py`, a `panel(studio, form)` that adds its
controls to the form (hires) or its own button (the x/y plot)."""
from __future__ import annotations

import importlib

from ldm_core.service import Service

from .common import Form, Panel


def add_panels(studio: Service, form: Form) -> dict[str, Panel]:
    """Every composition panel the studio offers for `form.task`, added; {composition name: its panel}."""
    return {c.name: importlib.import_module(f"{__package__}.{c.name}").panel(studio, form)
            for c in studio.compositions(form.task)}
