"""Speed-ups that change pixels a little, each on by default only where the evaluations allow it
(docs/benchmarks.md, "the paper's models on 2 cores"), each switchable per request
(`Sampling.speedups`), and recorded in the result's info and the PNG:

- DeepCache (Ma et al., CVPR 2024; the `DeepCache` package of its authors): every
  `interval`-th step runs the whole UNet; the steps between rerun only its shallowest branch and
  reuse the deep features cached at the last full step. A model's interval and branch are
  catalog settings (`deepcache_interval`, `deepcache_branch`).
- bf16: the UNet held and run in bfloat16 on CPUs that compute it natively (AVX512-BF16 or
  AMX on x86, BF16 on Arm); it takes and returns float32, so the sampler's arithmetic, the
  latents and the autoencoder stay in float32.
"""
from __future__ import annotations

import copy
import os
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from types import SimpleNamespace

import torch

from .device import native_small_convs
from .limits import check_deadline
from .options import BF16, DEEPCACHE, NO_SPEEDUPS


@dataclass(frozen=True)
class Plan:
    """The speed-ups one request runs with, on this device."""
    deepcache: tuple[int, int] | None = None     # (interval, branch)
    bf16: bool = False

    def describe(self) -> str:
        parts = []
        if self.deepcache:
            parts.append(f"{DEEPCACHE} (interval {self.deepcache[0]}, branch {self.deepcache[1]})")
        if self.bf16:
            parts.append(BF16)
        return ", ".join(parts) or NO_SPEEDUPS


def plan(requested: str, entry, device: torch.device) -> Plan:
    """What of the `requested` speed-ups (a checked request's canonical "deepcache,bf16" or
    "none") applies to the model `entry` on `device`."""
    names = set() if requested == NO_SPEEDUPS else set(requested.split(","))
    dc = None
    if DEEPCACHE in names and entry.deepcache_interval > 1:
        dc = (entry.deepcache_interval, entry.deepcache_branch)
    return Plan(deepcache=dc, bf16=BF16 in names and device.type == "cpu" and native_bf16())


@cache
def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (else bf16 is emulated and slower than
    float32). LDM_CPU_BF16=0 or 1 overrides."""
    forced = os.environ.get("LDM_CPU_BF16", "")
    if forced in ("0", "1"):
        return forced == "1"
    try:
        with open("/proc/cpuinfo") as f:
            flags = set()
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags.update(line.split(":", 1)[1].split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def prepare_module(module: torch.nn.Module, device: torch.device, compile: bool) -> torch.nn.Module:
    """The per-component defaults that bench/run.py chose (docs/benchmarks.md)."""
    if device.type == "cpu" and not compile:
        native_small_convs(module)
    if hasattr(module, "use_slicing") and hasattr(module, "use_tiling"):
        module.auto_memory = True            # autoencoders: whole batch, one at a time or tiles, as memory allows
    if isinstance(getattr(module, "decoder", None), torch.nn.Module):
        # the request's deadline, checked before each image or tile the autoencoder decodes
        module.decoder.register_forward_pre_hook(lambda *_: check_deadline("decoding"))
    if compile and is_unet(type(module)):
        module.compile()                     # torch.compile in place, on the first call
    return module


# ------------------------------------------------------------------ bf16
def is_unet(cls: type) -> bool:
    return cls.__name__.startswith("UNet")


def _cast(x, dtype):
    if isinstance(x, torch.Tensor):
        return x.to(dtype) if x.is_floating_point() and x.dtype != dtype else x
    if isinstance(x, (list, tuple)):
        return type(x)(_cast(v, dtype) for v in x)
    if isinstance(x, dict):
        return {k: _cast(v, dtype) for k, v in x.items()}
    return x


def _bf16_inputs(module, args, kwargs):
    module.__dict__["_bf16_running"] = True       # within its forward, the module says bf16 (`dtype` below)
    # the timestep (argument 1) stays as it is: a fractional sampler timestep would be rounded in bf16
    args = (_cast(args[0], torch.bfloat16), *args[1:2], *_cast(args[2:], torch.bfloat16)) if args else args
    return args, {k: v if k == "timestep" else _cast(v, torch.bfloat16) for k, v in kwargs.items()}


def _float_outputs(module, args, output):
    module.__dict__["_bf16_running"] = False      # (run even when the forward raised: always_call)
    if isinstance(output, tuple):
        return (output[0].float(), *output[1:])
    if hasattr(output, "sample"):
        output.sample = output.sample.float()
    return output


def _dtype(self) -> torch.dtype:
    return torch.bfloat16 if self.__dict__.get("_bf16_running") else torch.float32


def bf16_unet(unet: torch.nn.Module) -> torch.nn.Module:
    """A bfloat16 copy of `unet` that takes and returns float32 and, outside its forward, says
    float32 as its dtype (the pipelines make their latents in `unet.dtype`: the sampler's
    arithmetic stays in float32; inside, diffusers casts its time embedding to `self.dtype`)."""
    m = torch.nn.Module.to(copy.deepcopy(unet), torch.bfloat16)   # (diffusers' own .to warns of fp32 modules: none)
    m.__class__ = type(f"Bf16{type(unet).__name__}", (type(unet),), {"dtype": property(_dtype)})
    m.register_forward_pre_hook(_bf16_inputs, with_kwargs=True)
    m.register_forward_hook(_float_outputs, always_call=True)
    return m


# ------------------------------------------------------------------ DeepCache
def _deepcache_helper():
    from DeepCache import DeepCacheSDHelper      # imported on first use: a speed-up, not a start-up cost
    return DeepCacheSDHelper


@contextmanager
def deep_cache(unet: torch.nn.Module, interval: int, branch: int):
    """DeepCache on `unet` for the duration: its step count is kept from the calls themselves.
    A call at the same timestep as the one before is another piece of the same step (tiled
    super-resolution: each tile keeps its own cache, and runs in full while it has none); a
    timestep that rises, or a new input shape, starts a new schedule with a full step."""
    helper = _deepcache_helper()(pipe=SimpleNamespace(unet=unet))
    helper.set_params(cache_interval=interval, cache_branch_id=branch)
    helper.reset_states()
    helper.start_timestep = 0
    state = {"t": None, "shape": None, "step": -1, "piece": 0, "caches": {}}

    def wrap_unet_forward():      # DeepCache's own wrapper looks the step up in a pipeline's scheduler
        helper.function_dict["unet_forward"] = forward = unet.forward

        def counted(sample, timestep, *args, **kwargs):
            t = float(torch.as_tensor(timestep).flatten()[0])
            if state["t"] is not None and t == state["t"] and sample.shape == state["shape"]:
                state["piece"] += 1
            elif state["t"] is None or t > state["t"] or sample.shape != state["shape"]:
                state.update(step=0, piece=0, caches={})
            else:
                state.update(step=state["step"] + 1, piece=0)
            state.update(t=t, shape=sample.shape)
            helper.cached_output = state["caches"].setdefault(state["piece"], {})
            # a piece with nothing cached yet runs in full (PNDM repeats a timestep: a second piece)
            helper.cur_timestep = state["step"] if helper.cached_output else 0
            return forward(sample, timestep, *args, **kwargs)
        unet.forward = counted

    helper.wrap_unet_forward = wrap_unet_forward
    own = {id(m) for m in unet.modules() if "forward" in m.__dict__}
    helper.wrap_modules()
    try:
        yield
    finally:
        helper.unwrap_modules()
        for m in unet.modules():      # unwrapping leaves bound methods behind: the class's own again
            if id(m) not in own:
                m.__dict__.pop("forward", None)
        state["caches"].clear()


@contextmanager
def applied(p: Plan, pipe):
    """The plan's run-time speed-ups on a loaded pipeline (bf16 is chosen when it is loaded)."""
    unet = getattr(pipe, "unet", None)
    if p.deepcache and unet is not None and getattr(unet, "mid_block", None) is not None:
        with deep_cache(unet, *p.deepcache):
            yield
    else:
        yield
