"""What every task pipeline shares: latent (de)normalisation, samplers, per-image seeds,
classifier-free guidance, prompt encoding, and the step callback that reports progress
and can interrupt a running generation.
"""
from __future__ import annotations

import functools
import inspect
import random
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable

import torch
from diffusers import (AutoencoderKL, DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, VQModel)
from diffusers.utils.torch_utils import randn_tensor

from ..grounding import GROUNDING_CHANNELS  # noqa: F401  (re-exported for the pipelines)
from ..options import DEFAULT_SAMPLER, MASK_DOWNSAMPLING, MODEL_DEFAULT, SAMPLER_NAMES  # noqa: F401

# ---------------------------------------------------------------- samplers
# name -> (scheduler class, extra config). Built from the model's own scheduler config, so the
# training noise schedule (betas, prediction type) is kept whatever the sampler.
SAMPLERS: dict[str, tuple[type, dict]] = {
    "DDIM": (DDIMScheduler, {}),
    "DPM++ 2M": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "DPM++ 2M Karras": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2,
                                                     "use_karras_sigmas": True}),
    "Euler": (EulerDiscreteScheduler, {}),
    "Euler a": (EulerAncestralDiscreteScheduler, {}),
}
# the scheduler the model was published with (its scheduler_config.json as is: PNDM for GLIGEN,
# DDIM for the CompVis LDMs and this SD-inpainting upload)
SAMPLERS[MODEL_DEFAULT] = (None, {})
assert tuple(SAMPLERS) == SAMPLER_NAMES, "ldm_core/options.py names the samplers a request may ask for"


def make_scheduler(base_config, sampler: str):
    """A fresh scheduler of the sampler's kind on the model's published schedule `base_config`."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    cls, extra = SAMPLERS[sampler]
    if cls is None:
        import diffusers
        cls = getattr(diffusers, dict(base_config).get("_class_name", ""), None)
        if cls is None:
            raise ValueError(f"this model's scheduler {dict(base_config).get('_class_name')!r} is not in diffusers")
    cfg = {k: v for k, v in dict(base_config).items() if not k.startswith("_")}
    # options that only some schedulers know would warn; from_config ignores unknown keys
    return cls.from_config({**cfg, **extra})


# ---------------------------------------------------------------- seeds
MAX_SEED = 2 ** 32 - 1


def resolve_seeds(seed: int | None, n: int) -> list[int]:
    """Image i gets seed + i; seed -1 / None draws a random base seed."""
    if seed is None or seed < 0:
        seed = random.SystemRandom().randrange(0, MAX_SEED - 64)
    return [(seed + i) % (MAX_SEED + 1) for i in range(n)]


def step_kwargs(scheduler, generators: list[torch.Generator]) -> dict:
    """Extra arguments of `scheduler.step`: the per-image generators for samplers that draw noise."""
    return {"generator": generators} if "generator" in inspect.signature(scheduler.step).parameters else {}


def make_generators(seeds: list[int]) -> list[torch.Generator]:
    # CPU generators: the same seed gives the same noise on every device
    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def per_image_noise(shape: tuple[int, ...], generators: list[torch.Generator], device, dtype) -> torch.Tensor:
    """(B, C, h, w) noise, image i drawn from generator i alone (batch-size invariant)."""
    return randn_tensor(shape, generator=generators, device=torch.device(device), dtype=dtype)


# ---------------------------------------------------------------- latent space
def latent_channels(vae) -> int:
    if isinstance(vae, AutoencoderKL):
        return vae.config.latent_channels
    return vae.config.vq_embed_dim or vae.config.latent_channels


COORD_CHANNELS = 2  # optional (x, y) position maps after a UNet's other inputs (CoordConv)


def coord_maps(like: torch.Tensor) -> torch.Tensor:
    """(B, 2, h, w) maps of x and y in [-1, 1], shaped like `like` (B, C, h, w).

    A UNet built with two more input channels than its task needs reads these: they tell each
    position where it is, which box tokens ("<loc7>") and relations ("left of") need."""
    b, _, h, w = like.shape
    ys = torch.linspace(-1, 1, h, device=like.device, dtype=like.dtype)
    xs = torch.linspace(-1, 1, w, device=like.device, dtype=like.dtype)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"))  # (2, h, w): x then y
    return grid[None].expand(b, -1, -1, -1)


def with_coords(x: torch.Tensor, unet_in_channels: int) -> torch.Tensor:
    """Append the coordinate maps when the UNet takes them (its input is 2 channels wider than x)."""
    extra = unet_in_channels - x.shape[1]
    if extra == 0:
        return x
    if extra != COORD_CHANNELS:
        raise ValueError(f"the UNet takes {unet_in_channels} input channels; this task gives {x.shape[1]} "
                         f"(or {x.shape[1] + COORD_CHANNELS} with coordinate maps)")
    return torch.cat([x, coord_maps(x)], 1)


def vae_scale_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def _stats(vae, like: torch.Tensor):
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is None or std is None:
        return None
    shape = (1, len(mean), 1, 1)
    return (torch.tensor(mean, device=like.device, dtype=like.dtype).view(shape),
            torch.tensor(std, device=like.device, dtype=like.dtype).view(shape))


# ---------------------------------------------------------------- autoencoder memory
# A whole encode/decode holds about 8 activations of the full-resolution width per image: an
# SD-1.5 VAE decode at 1024x1024 takes 3.9 GB in fp32 (bench/run.py, "memory"; the estimate
# says 4.3 GB). Autoencoders the stack marks `auto_memory` run the whole batch at once while
# that fits in VAE_MEMORY_SHARE of the free memory (fastest: one image at a time cost 20 % more
# on 2 CPU cores), one image at a time when only that fits, and in tiles when not even that does.
VAE_MEMORY_SHARE = 0.5


def available_memory(device) -> int | None:
    """Bytes free for tensors on `device` (CUDA: free + cached; CPU: MemAvailable); None if unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
    return None


def vae_working_bytes(vae, height: int, width: int) -> int:
    """Estimated peak extra memory of a whole encode/decode of one height x width image."""
    return height * width * vae.config.block_out_channels[0] * next(vae.parameters()).element_size() * 8


@contextmanager
def vae_memory_plan(vae, batch: int, height: int, width: int):
    """Whole batch, one image at a time (slicing) or tiles: the fastest that fits in memory."""
    if not getattr(vae, "auto_memory", False):
        yield
        return
    free = available_memory(next(vae.parameters()).device)
    one = vae_working_bytes(vae, height, width)
    budget = VAE_MEMORY_SHARE * free if free is not None else float("inf")
    vae.use_slicing = batch > 1 and batch * one > budget
    vae.use_tiling = one > budget
    try:
        yield
    finally:
        vae.use_slicing = vae.use_tiling = False


def encode_latents(vae, images: torch.Tensor, generator=None, sample: bool = False) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1] -> normalised latents (B, C, H/f, W/f)."""
    if isinstance(vae, VQModel):
        return vae.encode(images).latents
    with vae_memory_plan(vae, images.shape[0], images.shape[-2], images.shape[-1]):
        dist = vae.encode(images).latent_dist
    z = dist.sample(generator) if sample else dist.mode()
    stats = _stats(vae, z)
    if stats is not None:
        return (z - stats[0]) * vae.config.scaling_factor / stats[1]
    return z * vae.config.scaling_factor


def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents -> images (B, 3, H, W) in [-1, 1]."""
    if isinstance(vae, VQModel):
        return vae.decode(latents).sample
    stats = _stats(vae, latents)
    if stats is not None:
        z = latents * stats[1] / vae.config.scaling_factor + stats[0]
    else:
        z = latents / vae.config.scaling_factor
    f = vae_scale_factor(vae)
    with vae_memory_plan(vae, z.shape[0], z.shape[-2] * f, z.shape[-1] * f):
        return vae.decode(z).sample


def pil_to_tensor(img) -> torch.Tensor:
    """PIL image -> (1, 3, H, W) in [-1, 1]."""
    import numpy as np
    a = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 127.5 - 1.0)
    return a.permute(2, 0, 1)[None]


def to_pil(images: torch.Tensor):
    """(B, 3, H, W) in [-1, 1] -> list of PIL RGB images."""
    from PIL import Image
    arr = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def latent_preview(latents: torch.Tensor):
    """A cheap RGB look at latents (B, C, h, w) for live previews: first 3 channels, rescaled."""
    from PIL import Image
    x = latents[:, :3].float()
    if x.shape[1] < 3:
        x = x[:, :1].expand(-1, 3, -1, -1)
    lo, hi = x.amin((1, 2, 3), keepdim=True), x.amax((1, 2, 3), keepdim=True)
    arr = ((x - lo) / (hi - lo + 1e-6) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


# ---------------------------------------------------------------- CPU kernels
# Below this many multiply-adds a convolution runs faster on PyTorch's own CPU kernel than on
# oneDNN's, whose per-call setup then costs more than it saves (bench/run.py measures it:
# about 10 % of a built-in 64x64 image on 2 cores). 0 turns the switch off.
SMALL_CONV_MACS = 2 ** 23
_get_mkldnn, _set_mkldnn = torch._C._get_mkldnn_enabled, torch._C._set_mkldnn_enabled


def _conv_forward(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    k = conv.kernel_size[0] * conv.kernel_size[1]
    if x.is_cpu and x.numel() * conv.out_channels * k // conv.groups <= SMALL_CONV_MACS:
        before = _get_mkldnn()
        _set_mkldnn(False)
        try:
            return torch.nn.Conv2d.forward(conv, x)
        finally:
            _set_mkldnn(before)
    return torch.nn.Conv2d.forward(conv, x)


def native_small_convs(module: torch.nn.Module) -> int:
    """Route `module`'s small CPU convolutions to PyTorch's native kernel (numerically the
    same convolution; the choice is made per call from the input's size). Returns how many
    convolutions it wrapped; calling it twice changes nothing."""
    n = 0
    for m in module.modules():
        if type(m) is torch.nn.Conv2d and "forward" not in m.__dict__:
            m.forward = functools.partial(_conv_forward, m)
            n += 1
    return n


# ---------------------------------------------------------------- text
def text_limit(tokenizer, text_encoder) -> int:
    """Tokens the text encoder reads: the tokenizer's `model_max_length`, capped by the encoder's
    position table (CompVis' LDMBert has 77 positions while its hub tokenizer says 512)."""
    positions = getattr(getattr(text_encoder, "config", None), "max_position_embeddings", None)
    return min(tokenizer.model_max_length, positions or tokenizer.model_max_length)


def truncation_warnings(tokenizer, limit: int, texts: list[str], what: str = "prompt") -> list[str]:
    """A warning for each distinct text longer than the `limit` tokens the model reads."""
    out = []
    for text in dict.fromkeys(t for t in texts if t):
        ids = tokenizer(text, truncation=False).input_ids
        if len(ids) > limit:
            kept = tokenizer.decode(ids[:limit], skip_special_tokens=True)
            out.append(f"the {what} is {len(ids)} tokens long and this model reads {limit}: everything after "
                       f"{kept[-40:]!r} was cut")
    return out


def encode_prompts(tokenizer, text_encoder, prompts: list[str], device) -> torch.Tensor:
    """Prompts -> encoder hidden states (B, L, D), padded and cut to the L tokens the encoder reads."""
    ids = tokenizer(prompts, padding="max_length", max_length=text_limit(tokenizer, text_encoder),
                    truncation=True, return_tensors="pt").input_ids.to(device)
    return text_encoder(ids)[0]


def apply_guidance(noise_pred: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """Classifier-free guidance on a (2B, ...) prediction laid out [uncond; cond]."""
    uncond, cond = noise_pred.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


# ---------------------------------------------------------------- progress and interruption
class GenerationCancelled(Exception):
    """Raised inside a pipeline when its step callback asks it to stop."""


@dataclass
class StepInfo:
    step: int            # 1-based, after this step
    total: int
    timestep: int
    latents: torch.Tensor  # (B, C, h, w) current latents


StepCallback = Callable[[StepInfo], "bool | None"]  # return True to interrupt


def report_step(callback: StepCallback | None, step: int, total: int, t, latents) -> None:
    if callback is not None and callback(StepInfo(step, total, int(t), latents)):
        raise GenerationCancelled(f"generation cancelled after step {step} of {total}")


@dataclass
class PipelineOutput:
    images: list          # PIL images
    seeds: list[int]
    warnings: list[str] = field(default_factory=list)   # for the user: a prompt cut, ...
