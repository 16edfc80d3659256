"""Fault injection from the tests, not a hook in the studio: `install(token)` makes a generation
whose prompt contains `token` raise torch.OutOfMemoryError at its first step, as a GPU would.
Every task's `call` (how the stack runs its pipeline) is wrapped; `uninstall()` puts them back."""
from dataclasses import replace

import torch

from ldm_core import tasks

_ORIGINAL: dict = {}


def install(token: str) -> None:
    def wrap(call):
        def injected(pipe, req, seeds, callback):
            if token in (getattr(req, "prompt", None) or ""):
                def out_of_memory(step):
                    raise torch.OutOfMemoryError(f"injected by the tests at step {step.step}")
                callback = out_of_memory
            return call(pipe, req, seeds, callback)
        return injected

    for name, task in list(tasks.TASKS.items()):
        _ORIGINAL.setdefault(name, task)
        tasks.TASKS[name] = replace(task, call=wrap(_ORIGINAL[name].call))


def uninstall() -> None:
    tasks.TASKS.update(_ORIGINAL)
    _ORIGINAL.clear()
