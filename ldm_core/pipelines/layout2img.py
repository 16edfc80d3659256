"""Layout -> image (paper §4.3), diffusers-shaped.

The built-in model is grounded: each labelled box is placed on the latent grid as a
grounding map (label words one-hot + occupancy, area coverage at the box's edges; see
`ldm_core.grounding` for the design and why) concatenated to the latent input, and the
optional caption is read through cross-attention. The same UNet draws from a caption
alone with an empty map, so `shapes-text2img` and `shapes-layout2img` share its weights.
Guidance pushes from (negative prompt, empty map) towards (caption, boxes).

Beyond the training size (`refine_from`, the catalog's `refine_above`): a canvas larger than
`refine_from` is drawn there first (the objects at the pixel size the model learnt), the result
decoded, enlarged bicubically and encoded at the requested size, then noised to
`refine_strength` and denoised again with the boxes' grounding map at the larger latent (a
"hires fix": SDEdit at the target size). docs/evaluation.md has the measurements that chose it
over plain convolutional sampling.

A UNet without the map channels gets the boxes the paper's token way instead (label and
corners quantised to 1/32, appended to the caption, `ldm_core.text.layout_text`). GLIGEN
hub checkpoints, which ground boxes through gated self-attention, run through
`GligenLayoutPipeline`.
"""
from __future__ import annotations

from dataclasses import replace
from functools import partial

import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline

from ..grounding import MAX_BOXES, grounding_map
from ..prompts import is_weighted, parse_weights, plain_text
from ..text import layout_text
from .common import (
    DEFAULT_SAMPLER,
    PipelineOutput,
    StepCallback,
    batch_inputs,
    check_common,
    check_unet_channels,
    count_tokens,
    denoise,
    encode_guided,
    encode_prompts,
    expand_each,
    guided,
    input_width,
    make_generators,
    make_scheduler,
    per_image_noise,
    report_step,
    seeds_or_default,
    takes_grounding,
    text_limit,
    truncation_warnings,
)
from .img2img import start_step
from .latents import (
    decode_latents,
    encode_latents,
    latent_channels,
    latent_shape,
    to_pil,
    vae_scale_factor,
    with_coords,
)

Boxes = list[tuple[str, tuple[float, float, float, float]]]
REFINE_STRENGTH = 0.5      # hires fix: how far the enlarged first stage is noised before it is drawn again
UPSCALE = "bicubic"


def first_stage_size(height: int, width: int, refine_from: int, f: int) -> tuple[int, int] | None:
    """A hires fix's first canvas: the requested one scaled so its longer side is `refine_from`
    (sides multiples of the autoencoder's f); None when no refinement is asked for or it is not larger."""
    if not refine_from or max(height, width) <= refine_from:
        return None
    scale = refine_from / max(height, width)
    return max(f, round(height * scale / f) * f), max(f, round(width * scale / f) * f)


def staged(callback: StepCallback | None, total: int):
    """stage(offset) -> the step callback of a stage whose steps come after `offset` others: steps are
    numbered across both stages of a hires fix, out of their `total` (progress, cancelling)."""
    def stage(offset: int) -> StepCallback | None:
        if callback is None:
            return None
        return lambda info: callback(replace(info, step=info.step + offset, total=total))
    return stage


class Layout2ImgPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->unet->vae"

    # Copied from ldm_core.pipelines.text2img.Text2ImgPipeline.__init__
    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.published_scheduler_config = dict(scheduler.config)   # each call samples with a fresh scheduler

    @staticmethod
    def unet_in_channels(latent_channels: int, *, grounding: bool = True, coords: bool = False) -> int:
        """latents (C), the box grounding map (G; without it, boxes go in as tokens), (x, y) maps."""
        return input_width(latent_channels, grounding=grounding, coords=coords)

    @property
    def grounded(self) -> bool:
        """Whether the UNet takes a box grounding map after the latents (the built-in layout model)."""
        return takes_grounding(self.unet.config.in_channels, latent_channels(self.vae))

    def check_inputs(self, texts, boxes, negs, height, width, steps, guidance_scale, seeds):
        if len(boxes) > MAX_BOXES:
            raise ValueError(f"at most {MAX_BOXES} boxes, got {len(boxes)}")
        check_common(texts, negs, seeds, height, width, steps, guidance_scale, vae_scale_factor(self.vae))
        c = latent_channels(self.vae)
        check_unet_channels(self.unet, {self.unet_in_channels(c, grounding=g, coords=k):
                                        ("latents + a grounding map" if g else "latents, boxes as tokens")
                                        + " + coordinate maps" * k for g in (True, False) for k in (False, True)},
                            "layout-to-image")
        limit = text_limit(self.tokenizer, self.text_encoder)
        n_tokens = max(limit - n.limit + n.used for n in (count_tokens(self.tokenizer, limit, t) for t in set(texts)))
        if n_tokens > limit:
            what = "the caption takes" if self.grounded else "caption and boxes take"
            raise ValueError(f"{what} {n_tokens} tokens; this model reads at most {limit}: "
                             f"shorten the caption" + ("" if self.grounded else " or use fewer boxes"))

    # Copied from ldm_core.pipelines.text2img.Text2ImgPipeline.prepare_latents
    def prepare_latents(self, scheduler, n, height, width, generators, dtype):
        shape = latent_shape(self.vae, n, height, width)
        return per_image_noise(shape, generators, self.device, dtype) * scheduler.init_noise_sigma  # (B, C, h, w)

    def unet_model(self, cond: torch.Tensor, grounding: torch.Tensor | None, do_cfg: bool):
        """The UNet as the denoising loop calls it: the latents, the grounding map (empty in the
        unconditional half, so guidance pushes towards the boxes), coordinate maps if taken."""
        n = self.unet.config.in_channels
        if grounding is not None and do_cfg:
            grounding = torch.cat([torch.zeros_like(grounding), grounding])  # (2B, G, h, w)

        def model(x, t):
            if grounding is not None:
                x = torch.cat([x, grounding.to(x.dtype)], 1)  # (B, C + G, h, w)
            return self.unet(with_coords(x, n), t, encoder_hidden_states=cond).sample
        return model

    def grounding(self, boxes: Boxes, n: int, height: int, width: int) -> torch.Tensor | None:
        """The boxes' grounding map on the latent grid of a height × width canvas (B, G, h, w); None
        for a UNet that reads them as tokens."""
        if not self.grounded:
            return None
        f = vae_scale_factor(self.vae)
        return grounding_map(boxes, height // f, width // f)[None].expand(n, -1, -1, -1).to(self.device)

    def upscale_latents(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Hires fix, step 2: the first stage's latents decoded, enlarged bicubically to height × width
        and encoded again (B, C, height/f, width/f)."""
        images = decode_latents(self.vae, latents.to(self.vae.dtype)).clamp(-1, 1)
        images = F.interpolate(images.float(), size=(height, width), mode=UPSCALE, align_corners=False).clamp(-1, 1)
        return encode_latents(self.vae, images.to(self.vae.dtype)).to(latents.dtype)

    def refine(self, latents, cond, boxes, height, width, steps, strength, guidance_scale, sampler, generators,
               callback):
        """Hires fix, step 3: SDEdit at the requested size: the enlarged latents noised to `strength`
        and denoised from there, the boxes' grounding map at the larger latent."""
        scheduler = make_scheduler(self.published_scheduler_config, sampler)
        scheduler.set_timesteps(steps, device=self.device)
        first = start_step(steps, strength) * scheduler.order
        timesteps = scheduler.timesteps[first:]
        if len(timesteps) == 0:
            return latents
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(first)
        noise = per_image_noise(tuple(latents.shape), generators, self.device, latents.dtype)
        latents = scheduler.add_noise(latents, noise, timesteps[:1].repeat(len(generators)))
        model = self.unet_model(cond, self.grounding(boxes, len(generators), height, width), guided(guidance_scale))
        return denoise(model, scheduler, latents, timesteps, guidance_scale, generators, callback)

    @torch.inference_mode()
    def __call__(self, prompt: str, boxes: Boxes = (), negative_prompt: str = "", height: int = 64, width: int = 64,
                 num_inference_steps: int = 25, guidance_scale: float = 5.0, seeds: list[int] | None = None,
                 sampler: str = DEFAULT_SAMPLER, callback: StepCallback | None = None,
                 output_type: str = "pil", refine_from: int = 0,
                 refine_strength: float = REFINE_STRENGTH) -> PipelineOutput:
        # 1. inputs: grounded, the boxes go in as a map and the caption alone is text; else all of it is tokens
        boxes = list(boxes)
        text = prompt if self.grounded else layout_text(prompt, boxes)
        prompts, negs, seeds = batch_inputs(text, negative_prompt, seeds)
        self.check_inputs(prompts, boxes, negs, height, width, num_inference_steps, guidance_scale, seeds)
        scheduler = make_scheduler(self.published_scheduler_config, sampler)
        generators = make_generators(seeds)
        # 2. conditioning: the text, and the boxes' grounding map (B, G, h, w) at the first stage's size
        do_cfg = guided(guidance_scale)
        cond, warnings = encode_guided(self.tokenizer, self.text_encoder, prompts, negs, do_cfg, self.device)
        f = vae_scale_factor(self.vae)
        first = first_stage_size(height, width, refine_from, f)   # (h, w) of a hires fix's first stage, or None
        h0, w0 = first or (height, width)
        refine_steps = num_inference_steps - start_step(num_inference_steps, refine_strength) if first else 0
        callback = staged(callback, num_inference_steps + refine_steps)
        # 3. latents
        latents = self.prepare_latents(scheduler, len(seeds), h0, w0, generators, cond.dtype)
        # 4. denoising loop (and the hires fix: enlarge, then refine at the requested size)
        scheduler.set_timesteps(num_inference_steps, device=self.device)
        latents = denoise(self.unet_model(cond, self.grounding(boxes, len(seeds), h0, w0), do_cfg), scheduler,
                          latents, scheduler.timesteps, guidance_scale, generators, callback(0))
        if first:
            latents = self.refine(self.upscale_latents(latents, height, width), cond, boxes, height, width,
                                  num_inference_steps, refine_strength, guidance_scale, sampler, generators,
                                  callback(num_inference_steps))
        # 5. decode
        # Copied from ldm_core.pipelines.text2img.Text2ImgPipeline.__call__: decode
        name = type(scheduler).__name__
        if output_type == "latent":
            return PipelineOutput(latents, seeds, warnings, name)
        images = to_pil(decode_latents(self.vae, latents.to(self.vae.dtype)))
        # End copy
        return PipelineOutput(images, seeds, warnings, name)


class GligenLayoutPipeline:
    """Adapter: runs a GLIGEN box-grounded Stable Diffusion checkpoint through diffusers'
    `StableDiffusionGLIGENPipeline` with the studio's call signature (per-image seeds,
    sampler choice, interruptible step callback, negative prompt)."""

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler):
        self.pipe = self._diffusers(dict(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet),
                                    scheduler)
        self.published_scheduler_config = dict(scheduler.config)   # each call samples with a fresh scheduler

    @staticmethod
    def _diffusers(modules: dict, scheduler):
        # lazy: only hub GLIGEN models need it, and it pulls in transformers' image processors
        from diffusers import StableDiffusionGLIGENPipeline
        pipe = StableDiffusionGLIGENPipeline(**modules, scheduler=scheduler, safety_checker=None,
                                             feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def __getattr__(self, name):  # components, device, enable_attention_slicing, ...
        return getattr(self.__dict__["pipe"], name)

    def to(self, *args, **kwargs):
        self.pipe.to(*args, **kwargs)
        return self

    @property
    def components(self):
        return self.pipe.components

    def text_inputs(self, prompts: list[str], negs: list[str], do_cfg: bool) -> dict:
        """The texts as diffusers' pipeline takes them; as embeddings when a word is weighted (`(red:1.3)`)."""
        if not any(is_weighted(parse_weights(t)) for t in prompts + negs):
            return {"prompt": [plain_text(parse_weights(t)) for t in prompts],
                    "negative_prompt": [plain_text(parse_weights(t)) for t in negs]}
        encode = partial(encode_prompts, self.pipe.tokenizer, self.pipe.text_encoder, device=self.pipe.device)
        return {"prompt_embeds": encode(prompts), "negative_prompt_embeds": encode(negs) if do_cfg else None}

    @torch.inference_mode()
    def __call__(self, prompt: str, boxes: Boxes, negative_prompt: str = "", height: int = 512, width: int = 512,
                 num_inference_steps: int = 25, guidance_scale: float = 7.5, seeds: list[int] | None = None,
                 sampler: str = DEFAULT_SAMPLER, callback: StepCallback | None = None,
                 output_type: str = "pil") -> PipelineOutput:
        if not boxes:
            raise ValueError("GLIGEN needs at least one box")
        seeds = seeds_or_default(seeds)
        scheduler = make_scheduler(self.published_scheduler_config, sampler)
        base = self.pipe     # this call's own diffusers pipeline on the shared modules (attention slicing kept)
        pipe = self._diffusers({k: getattr(base, k) for k in ("vae", "text_encoder", "tokenizer", "unet")}, scheduler)
        generators = make_generators(seeds)
        shape = latent_shape(pipe.vae, len(seeds), height, width)
        latents = per_image_noise(shape, generators, pipe.device, pipe.unet.dtype)  # diffusers scales by init sigma

        def on_step(i, t, lat):
            report_step(callback, i + 1, num_inference_steps, t, lat)

        limit = text_limit(pipe.tokenizer, pipe.text_encoder)
        prompts = expand_each([prompt or ""] * len(seeds), seeds)
        negs = expand_each([negative_prompt] * len(seeds), seeds, "negative_prompt")
        warnings = truncation_warnings(pipe.tokenizer, limit, prompts)
        if guided(guidance_scale):
            warnings += truncation_warnings(pipe.tokenizer, limit, negs, "negative prompt")
        out = pipe(**self.text_inputs(prompts, negs, guided(guidance_scale)),
                   gligen_phrases=[b[0] for b in boxes], gligen_boxes=[list(b[1]) for b in boxes], height=height,
                   width=width, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                   generator=generators, latents=latents, callback=on_step, callback_steps=1, output_type=output_type)
        return PipelineOutput(out.images, seeds, warnings, type(scheduler).__name__)
