"""Reading an original CompVis checkpoint without running it.

A released `.ckpt` is a PyTorch Lightning 1.4 checkpoint: a pickle (torch zip format) of
  {"state_dict": {name: tensor}, "callbacks": {<class ...ModelCheckpoint>: {...}}, "epoch",
   "global_step", "optimizer_states", "lr_schedulers", "pytorch-lightning_version", ...}.
We read it with torch's weights-only unpickler (tensors, containers, numbers, strings) plus the
smallest allow-list these files need: the ModelCheckpoint class (a key of "callbacks": a stub of
ours stands in under its name, so pytorch_lightning is neither imported nor run) and the numpy
scalar/dtype globals the callback's state may hold. Any other global is refused, by name, before
anything of the file runs. Legacy (pre-zip) torch pickles go through the same unpickler.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import torch


class CheckpointRefused(ValueError):
    """The file was not read: not a checkpoint, or it asks for code we do not run."""


class ModelCheckpointStub:
    """Stands in for pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint (only ever a dict
    key in these files). Plain: nothing of Lightning is imported or run."""

    def __init__(self):          # takes no arguments: a pickle cannot build one from data
        pass


def _allowed() -> list:
    np_core = getattr(np, "_core", None) or np.core             # numpy 2 renamed core -> _core
    out = [(ModelCheckpointStub, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
           (np_core.multiarray.scalar, "numpy.core.multiarray.scalar"),   # a numpy scalar: (dtype, bytes)
           (np_core.multiarray.scalar, "numpy._core.multiarray.scalar"),
           np.dtype]
    out += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]   # numpy >= 1.25
    return out


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")       # torch's message names the global it refused
_DETAIL = re.compile(r"WeightsUnpickler error:\s*([^\n]+)")


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint (its "state_dict", or the file itself if it is a bare state dict)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointRefused(f"{path.name}: not a file")
    try:
        with torch.serialization.safe_globals(_allowed()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if m := _GLOBAL.search(str(e)):
            raise CheckpointRefused(f"{path.name}: refused, it needs the global {m.group(1)}, which a checkpoint "
                                    f"of weights should not need; nothing of it was run") from None
        detail = _DETAIL.search(str(e))
        raise CheckpointRefused(f"{path.name}: not a PyTorch checkpoint the weights-only loader reads "
                                f"({detail.group(1).strip() if detail else 'unpickling error'}); nothing of it "
                                f"was run") from None
    except Exception as e:  # not a zip / pickle at all, truncated, ...
        raise CheckpointRefused(f"{path.name}: not a PyTorch checkpoint ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise CheckpointRefused(f"{path.name}: holds a {type(obj).__name__}, not a checkpoint dict")
    sd = obj.get("state_dict", obj)
    if not isinstance(sd, dict) or not sd:
        raise CheckpointRefused(f"{path.name}: has no state_dict")
    for k, v in sd.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            what = "has no state_dict" if sd is obj else "has a state_dict with a non-tensor entry"
            raise CheckpointRefused(f"{path.name}: {what} ({k!r}: {type(v).__name__})")
    return sd
