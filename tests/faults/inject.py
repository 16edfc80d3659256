"""Fault injection from the tests, not a hook in the studio: `install(token)` makes a generation
whose prompt contains `token` raise torch.OutOfMemoryError at its first step, as a GPU would."""
import torch

import ldm_core.stack as stack_module


def install(token: str) -> None:
    original = stack_module.ModelStack._call

    def _call(self, pipe, req, entry, seeds, callback):
        if token in (getattr(req, "prompt", None) or ""):
            def out_of_memory(step):
                raise torch.OutOfMemoryError(f"injected by the tests at step {step.step}")
            callback = out_of_memory
        return original(self, pipe, req, entry, seeds, callback)

    _call.injected = True
    stack_module.ModelStack._call = _call
