"""Layout -> image (paper §4.3), diffusers-shaped.

The built-in model is grounded: each labelled box is placed on the latent grid as a
grounding map (label words one-hot + occupancy, area coverage at the box's edges; see
`ldm_core.grounding` for the design and why) concatenated to the latent input, and the
optional caption is read through cross-attention. The same UNet draws from a caption
alone with an empty map, so `shapes-text2img` and `shapes-layout2img` share its weights.
Guidance pushes from (negative prompt, empty map) towards (caption, boxes).

A UNet without the map channels gets the boxes the paper's token way instead (label and
corners quantised to 1/32, appended to the caption, `ldm_core.text.layout_text`). GLIGEN
hub checkpoints, which ground boxes through gated self-attention, run through
`GligenLayoutPipeline`.
"""
from __future__ import annotations

import torch

from ..grounding import MAX_BOXES, grounding_map
from ..text import layout_text
from .common import (DEFAULT_SAMPLER, PipelineOutput, StepCallback, make_generators, make_scheduler,
                     per_image_noise, report_step, latent_channels, text_limit, truncation_warnings,
                     vae_scale_factor)
from .text2img import Text2ImgPipeline

Boxes = list[tuple[str, tuple[float, float, float, float]]]


class Layout2ImgPipeline(Text2ImgPipeline):
    @torch.inference_mode()
    def __call__(self, prompt: str, boxes: Boxes, negative_prompt: str = "", height: int = 64, width: int = 64,
                 num_inference_steps: int = 25, guidance_scale: float = 5.0, seeds: list[int] | None = None,
                 sampler: str = DEFAULT_SAMPLER, callback: StepCallback | None = None,
                 output_type: str = "pil") -> PipelineOutput:
        if len(boxes) > MAX_BOXES:
            raise ValueError(f"at most {MAX_BOXES} boxes, got {len(boxes)}")
        # grounded: the boxes go in as a map and the caption alone is text; else all of it is tokens
        text = prompt if self.grounded else layout_text(prompt, boxes)
        n_tokens, limit = len(self.tokenizer(text).input_ids), text_limit(self.tokenizer, self.text_encoder)
        if n_tokens > limit:
            what = "the caption takes" if self.grounded else "caption and boxes take"
            raise ValueError(f"{what} {n_tokens} tokens; this model reads at most {limit}: "
                             f"shorten the caption" + ("" if self.grounded else " or use fewer boxes"))
        if self.grounded:   # height and width are checked (multiples of f) by the text-to-image call
            f, n = self.scale_factor, len(seeds) if seeds is not None else 1
            self._grounding = grounding_map(boxes, height // f, width // f)[None].expand(n, -1, -1, -1).to(
                self.device)  # (B, G, h, w)
        try:
            return super().__call__(text, negative_prompt, height, width, num_inference_steps, guidance_scale, seeds,
                                    sampler, callback, output_type)
        finally:
            self._grounding = None


class GligenLayoutPipeline:
    """Adapter: runs a GLIGEN box-grounded Stable Diffusion checkpoint through diffusers'
    `StableDiffusionGLIGENPipeline` with the studio's call signature (per-image seeds,
    sampler choice, interruptible step callback, negative prompt)."""

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler):
        from diffusers import StableDiffusionGLIGENPipeline
        self.pipe = StableDiffusionGLIGENPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                                  scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                                  requires_safety_checker=False)
        self.pipe.set_progress_bar_config(disable=True)
        self.published_scheduler_config = dict(scheduler.config)   # kept whatever sampler runs

    def __getattr__(self, name):  # components, device, enable_attention_slicing, ...
        return getattr(self.__dict__["pipe"], name)

    def to(self, *args, **kwargs):
        self.pipe.to(*args, **kwargs)
        return self

    @property
    def components(self):
        return self.pipe.components

    @torch.inference_mode()
    def __call__(self, prompt: str, boxes: Boxes, negative_prompt: str = "", height: int = 512, width: int = 512,
                 num_inference_steps: int = 25, guidance_scale: float = 7.5, seeds: list[int] | None = None,
                 sampler: str = DEFAULT_SAMPLER, callback: StepCallback | None = None,
                 output_type: str = "pil") -> PipelineOutput:
        if not boxes:
            raise ValueError("GLIGEN needs at least one box")
        seeds = seeds if seeds is not None else [0]
        pipe = self.pipe
        pipe.scheduler = make_scheduler(self.published_scheduler_config, sampler)
        generators = make_generators(seeds)
        f = vae_scale_factor(pipe.vae)
        shape = (len(seeds), latent_channels(pipe.vae), height // f, width // f)
        dtype = pipe.unet.dtype
        latents = per_image_noise(shape, generators, pipe.device, dtype)  # scaled by init sigma inside diffusers

        def on_step(i, t, lat):
            report_step(callback, i + 1, num_inference_steps, t, lat)

        limit = text_limit(pipe.tokenizer, pipe.text_encoder)
        warnings = truncation_warnings(pipe.tokenizer, limit, [prompt])
        if guidance_scale > 1:
            warnings += truncation_warnings(pipe.tokenizer, limit, [negative_prompt], "negative prompt")
        out = pipe(prompt=[prompt or ""] * len(seeds), negative_prompt=[negative_prompt] * len(seeds),
                   gligen_phrases=[b[0] for b in boxes], gligen_boxes=[list(b[1]) for b in boxes],
                   height=height, width=width, num_inference_steps=num_inference_steps,
                   guidance_scale=guidance_scale, generator=generators, latents=latents,
                   callback=on_step, callback_steps=1, output_type=output_type)
        return PipelineOutput(out.images, seeds, warnings)
