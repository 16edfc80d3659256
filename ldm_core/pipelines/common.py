"""What every task pipeline shares, as plain functions: samplers, per-image seeds, prompt
encoding, classifier-free guidance, input checks and UNet input widths, the denoising loop (one
function, one signature, as k-diffusion's samplers), and the step callback that reports progress
and can interrupt. The latent space (encode, decode, coordinate maps, padding) is in `latents.py`.
"""
from __future__ import annotations

import inspect
import random
from dataclasses import dataclass, field
from typing import Callable

import diffusers
import torch
from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
)
from diffusers.utils.torch_utils import randn_tensor

from ..grounding import GROUNDING_CHANNELS
from ..limits import MAX_SEED
from ..prompts import (
    count_tokens,
    encoder_limit,
    expand,
    is_weighted,
    parse_weights,
    plain_text,
    reweight,
    weighted_ids,
)

# DEFAULT_SAMPLER, MASK_DOWNSAMPLING and SAMPLER_NAMES are re-exported for the pipelines' callers
from ..options import (  # noqa: F401
    DDIM,
    DEFAULT_SAMPLER,
    DPM_2M,
    DPM_2M_KARRAS,
    EULER,
    EULER_ANCESTRAL,
    MASK_DOWNSAMPLING,
    MODEL_DEFAULT,
    SAMPLER_NAMES,
)
from .latents import (  # noqa: F401
    COORD_CHANNELS,
    coord_maps,
    decode_latents,
    encode_latents,
    latent_channels,
    latent_preview,
    pil_to_tensor,
    to_pil,
    vae_scale_factor,
    with_coords,
)

# ---------------------------------------------------------------- samplers
# name (ldm_core.options) -> (scheduler class, extra config). Built from the model's own scheduler
# config, so the training noise schedule (betas, prediction type) is kept whatever the sampler.
# MODEL_DEFAULT: the model's scheduler_config.json as is (PNDM for GLIGEN, DDIM for the CompVis
# LDMs and this SD-inpainting upload).
_DPM_PP_2 = {"algorithm_type": "dpmsolver++", "solver_order": 2}
SAMPLERS: dict[str, tuple[type | None, dict]] = {
    DDIM: (DDIMScheduler, {}),
    DPM_2M: (DPMSolverMultistepScheduler, _DPM_PP_2),
    DPM_2M_KARRAS: (DPMSolverMultistepScheduler, {**_DPM_PP_2, "use_karras_sigmas": True}),
    EULER: (EulerDiscreteScheduler, {}),
    EULER_ANCESTRAL: (EulerAncestralDiscreteScheduler, {}),
    MODEL_DEFAULT: (None, {}),
}


def make_scheduler(base_config, sampler: str):
    """A fresh scheduler of the sampler's kind on the model's published schedule `base_config`."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    cls, extra = SAMPLERS[sampler]
    if cls is None:
        cls = getattr(diffusers, dict(base_config).get("_class_name", ""), None)
        if cls is None:
            raise ValueError(f"this model's scheduler {dict(base_config).get('_class_name')!r} is not in diffusers")
    cfg = {k: v for k, v in dict(base_config).items() if not k.startswith("_")}
    # options that only some schedulers know would warn; from_config ignores unknown keys
    return cls.from_config({**cfg, **extra})


# ---------------------------------------------------------------- seeds
SEED_HEADROOM = 64   # a random base seed leaves room for this many images before seeds wrap


def resolve_seeds(seed: int | None, n: int) -> list[int]:
    """Image i gets seed + i; seed -1 / None draws a random base seed."""
    if seed is None or seed < 0:
        seed = random.SystemRandom().randrange(0, MAX_SEED - SEED_HEADROOM)
    return [(seed + i) % (MAX_SEED + 1) for i in range(n)]


def seeds_or_default(seeds, n: int = 1) -> list[int]:
    """The seeds a call names, or, when it names none, seed i for image i."""
    return list(seeds) if seeds is not None else list(range(n))


def step_kwargs(scheduler, generators: list[torch.Generator], eta: float = 0.0) -> dict:
    """Extra arguments of `scheduler.step`: the per-image generators for samplers that draw noise,
    and DDIM's eta (0: deterministic; 1: as stochastic as DDPM) when it is not 0."""
    params = inspect.signature(scheduler.step).parameters
    if eta and "eta" not in params:
        raise ValueError(f"eta = {eta} applies to the DDIM sampler only; {type(scheduler).__name__} has none")
    return {**({"generator": generators} if "generator" in params else {}), **({"eta": eta} if eta else {})}


def make_generators(seeds: list[int]) -> list[torch.Generator]:
    # CPU generators: the same seed gives the same noise on every device
    return [torch.Generator("cpu").manual_seed(s) for s in seeds]


def per_image_noise(shape: tuple[int, ...], generators: list[torch.Generator], device, dtype) -> torch.Tensor:
    """(B, C, h, w) noise, image i drawn from generator i alone (batch-size invariant)."""
    return randn_tensor(shape, generator=generators, device=torch.device(device), dtype=dtype)


# ---------------------------------------------------------------- text
def text_limit(tokenizer, text_encoder) -> int:
    """Tokens the text encoder reads: the tokenizer's `model_max_length`, capped by the encoder's
    position table (CompVis' LDMBert has 77 positions while its hub tokenizer says 512)."""
    positions = getattr(getattr(text_encoder, "config", None), "max_position_embeddings", None)
    return encoder_limit(tokenizer.model_max_length, positions)


def truncation_warnings(tokenizer, limit: int, texts: list[str], what: str = "prompt") -> list[str]:
    """A warning for each distinct text longer than the `limit` tokens the model reads (the weight
    syntax of `ldm_core.prompts` not counted)."""
    out = []
    for text in dict.fromkeys(t for t in texts if t):
        n = count_tokens(tokenizer, limit, text)
        if n.over:
            extra = limit - n.limit
            out.append(f"the {what} is {n.used + extra} tokens long and this model reads {limit}: everything "
                       f"after {n.kept_text[-40:]!r} was cut")
    return out


def encode_prompts(tokenizer, text_encoder, prompts: list[str], device) -> torch.Tensor:
    """Prompts -> encoder hidden states (B, L, D), padded and cut to the L tokens the encoder reads.
    Weighted words (`(red:1.3)`, `ldm_core.prompts`) have their hidden states scaled, each prompt's
    mean kept; a batch without weights is encoded exactly as plain text."""
    limit = text_limit(tokenizer, text_encoder)
    parsed = [parse_weights(p) for p in prompts]
    if not any(is_weighted(c) for c in parsed):
        ids = tokenizer([plain_text(c) for c in parsed], padding="max_length", max_length=limit,
                        truncation=True, return_tensors="pt").input_ids.to(device)
        return text_encoder(ids)[0]
    rows = [weighted_ids(tokenizer, limit, c) for c in parsed]
    ids = torch.tensor([r.ids for r in rows], dtype=torch.long, device=device)          # (B, L)
    weights = torch.tensor([r.weights for r in rows], dtype=torch.float32)               # (B, L)
    return reweight(text_encoder(ids)[0], weights)


def guided(guidance_scale: float) -> bool:
    """Whether classifier-free guidance runs: at scale 1 it would give the conditional prediction alone."""
    return guidance_scale > 1.0


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
    images: list          # PIL images (or latents, output_type="latent")
    seeds: list[int]
    warnings: list[str] = field(default_factory=list)   # for the user: a prompt cut, ...
    scheduler: str = ""   # the scheduler class that ran
    info: dict = field(default_factory=dict)   # what the pipeline read from its input, for the result's info


# ---------------------------------------------------------------- the shared pieces of a call
def batch_inputs(prompt, negative_prompt, seeds) -> tuple[list[str], list[str], list[int]]:
    """One prompt, negative prompt and seed per image (a single prompt is repeated), each prompt's
    wildcards picked by its image's seed."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    seeds = seeds_or_default(seeds, len(prompts))
    if len(prompts) == 1 and len(seeds) > 1:
        prompts = prompts * len(seeds)
    negs = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
    return expand_each(prompts, seeds), expand_each(negs, seeds, "negative_prompt"), seeds


def expand_each(texts: list[str], seeds: list[int], what: str = "prompt") -> list[str]:
    """Each image's text with its wildcards (`{red|blue}`, `__colours__`) picked from its own seed."""
    if len(texts) != len(seeds):
        return texts     # check_common says what is wrong
    return [expand(t, s, what) for t, s in zip(texts, seeds)]


def check_common(prompts, negative_prompts, seeds, height, width, steps, guidance_scale, multiple: int) -> None:
    """The checks every text-conditioned pipeline makes: sizes, one of each per image, ranges."""
    if height % multiple or width % multiple:
        raise ValueError(f"height and width must be multiples of {multiple} (the autoencoder's downsampling), "
                         f"got {height}x{width}")
    if len(negative_prompts) != len(prompts):
        raise ValueError(f"{len(negative_prompts)} negative prompts for {len(prompts)} prompts")
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} images")
    check_steps(steps)
    if guidance_scale < 0:
        raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")


def check_steps(steps: int) -> None:
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")


def check_unet_channels(unet, accepted: dict[int, str], task: str) -> None:
    """A clear error when the UNet's input width is none of the `accepted` {width: what it holds}."""
    n = unet.config.in_channels
    if n not in accepted:
        options = "; ".join(f"{w} ({what})" for w, what in accepted.items())
        raise ValueError(f"this UNet takes {n} input channels; a {task} UNet takes {options}")


def encode_guided(tokenizer, text_encoder, prompts, negative_prompts, do_cfg: bool, device
                  ) -> tuple[torch.Tensor, list[str]]:
    """Text conditioning (B, L, D), with the negative prompts' before it (2B, L, D) for guidance,
    and a warning for each prompt cut to what the encoder reads."""
    limit = text_limit(tokenizer, text_encoder)
    cond = encode_prompts(tokenizer, text_encoder, prompts, device)  # (B, L, D)
    warnings = truncation_warnings(tokenizer, limit, prompts)
    if not do_cfg:
        return cond, warnings
    uncond = encode_prompts(tokenizer, text_encoder, negative_prompts, device)
    warnings += truncation_warnings(tokenizer, limit, negative_prompts, "negative prompt")
    return torch.cat([uncond, cond]), warnings  # (2B, L, D)


def input_width(c: int, *, grounding: bool = False, coords: bool = False) -> int:
    """Input channels of a text-conditioned UNet on c latent channels: the latents, a box grounding
    map (G) when it was trained with one, and (x, y) coordinate maps when it takes them."""
    return c + GROUNDING_CHANNELS * grounding + COORD_CHANNELS * coords


def takes_grounding(in_channels: int, c: int) -> bool:
    """Whether a text-conditioned UNet of `in_channels` inputs on c latent channels reads a grounding map."""
    return in_channels - c in (GROUNDING_CHANNELS, GROUNDING_CHANNELS + COORD_CHANNELS)


Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]   # (scaled input (B, C, h, w), t) -> noise prediction


def denoise(model: Model, scheduler, latents: torch.Tensor, timesteps, guidance_scale: float,
            generators: list[torch.Generator], callback: StepCallback | None, eta: float = 0.0) -> torch.Tensor:
    """The numbered denoising loop of every task. `model` adds the task's conditioning to the
    scaled latents and returns the UNet's prediction; with guidance (scale > 1) it is given the
    batch twice, [unconditional; conditional], as its conditioning is laid out. `eta`: DDIM's."""
    do_cfg = guided(guidance_scale)
    extra = step_kwargs(scheduler, generators, eta)
    for i, t in enumerate(timesteps):
        x = torch.cat([latents] * 2) if do_cfg else latents         # (2B or B, C, h, w)
        noise_pred = model(scheduler.scale_model_input(x, t), t)
        if do_cfg:
            noise_pred = apply_guidance(noise_pred, guidance_scale)
        latents = scheduler.step(noise_pred, t, latents, **extra).prev_sample
        report_step(callback, i + 1, len(timesteps), t, latents)
    return latents
