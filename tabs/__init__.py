"""One file per tab, each exposing `build(studio)`, runnable alone; `api.py` adds the plain
HTTP endpoints. A task's tab is the module named after it (`tabs/<task>.py`), a composition's
panel likewise (`tabs/<composition>.py`, added by `panels.py`); `common.py` is the block every
task tab shares."""
from __future__ import annotations

import importlib

from ldm_core.tasks import TASKS


def task_tabs(names=tuple(TASKS)) -> dict:
    """{task name: its tab module} for the tasks `names`, in the tasks' order."""
    return {name: importlib.import_module(f"{__name__}.{name}") for name in TASKS if name in names}
