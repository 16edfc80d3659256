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
from diffusers import DiffusionPipeline

from ..grounding import MAX_BOXES, grounding_map
from ..text import layout_text
from .common import (
    DEFAULT_SAMPLER,
    PipelineOutput,
    StepCallback,
    batch_inputs,
    check_common,
    check_unet_channels,
    denoise,
    encode_guided,
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
from .latents import decode_latents, latent_channels, latent_shape, to_pil, vae_scale_factor, with_coords

Boxes = list[tuple[str, tuple[float, float, float, float]]]


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

    def check_inputs(self, text, boxes, negs, height, width, steps, guidance_scale, seeds):
        if len(boxes) > MAX_BOXES:
            raise ValueError(f"at most {MAX_BOXES} boxes, got {len(boxes)}")
        check_common([text] * len(seeds), negs, seeds, height, width, steps, guidance_scale,
                     vae_scale_factor(self.vae))
        c = latent_channels(self.vae)
        check_unet_channels(self.unet, {self.unet_in_channels(c, grounding=g, coords=k):
                                        ("latents + a grounding map" if g else "latents, boxes as tokens")
                                        + " + coordinate maps" * k for g in (True, False) for k in (False, True)},
                            "layout-to-image")
        n_tokens = len(self.tokenizer(text).input_ids)
        limit = text_limit(self.tokenizer, self.text_encoder)
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

    @torch.inference_mode()
    def __call__(self, prompt: str, boxes: Boxes = (), negative_prompt: str = "", height: int = 64, width: int = 64,
                 num_inference_steps: int = 25, guidance_scale: float = 5.0, seeds: list[int] | None = None,
                 sampler: str = DEFAULT_SAMPLER, callback: StepCallback | None = None,
                 output_type: str = "pil") -> PipelineOutput:
        # 1. inputs: grounded, the boxes go in as a map and the caption alone is text; else all of it is tokens
        boxes = list(boxes)
        text = prompt if self.grounded else layout_text(prompt, boxes)
        prompts, negs, seeds = batch_inputs(text, negative_prompt, seeds)
        self.check_inputs(text, boxes, negs, height, width, num_inference_steps, guidance_scale, seeds)
        scheduler = make_scheduler(self.published_scheduler_config, sampler)
        generators = make_generators(seeds)
        # 2. conditioning: the text, and the boxes' grounding map (B, G, h, w)
        do_cfg = guided(guidance_scale)
        cond, warnings = encode_guided(self.tokenizer, self.text_encoder, prompts, negs, do_cfg, self.device)
        f = vae_scale_factor(self.vae)
        grounding = None
        if self.grounded:
            grounding = grounding_map(boxes, height // f, width // f)[None].expand(len(seeds), -1, -1, -1)
            grounding = grounding.to(self.device)
        # 3. latents
        latents = self.prepare_latents(scheduler, len(seeds), height, width, generators, cond.dtype)
        # 4. denoising loop
        scheduler.set_timesteps(num_inference_steps, device=self.device)
        latents = denoise(self.unet_model(cond, grounding, do_cfg), scheduler, latents, scheduler.timesteps,
                          guidance_scale, generators, callback)
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
        warnings = truncation_warnings(pipe.tokenizer, limit, [prompt])
        if guided(guidance_scale):
            warnings += truncation_warnings(pipe.tokenizer, limit, [negative_prompt], "negative prompt")
        out = pipe(prompt=[prompt or ""] * len(seeds), negative_prompt=[negative_prompt] * len(seeds),
                   gligen_phrases=[b[0] for b in boxes], gligen_boxes=[list(b[1]) for b in boxes],
                   height=height, width=width, num_inference_steps=num_inference_steps,
                   guidance_scale=guidance_scale, generator=generators, latents=latents,
                   callback=on_step, callback_steps=1, output_type=output_type)
        return PipelineOutput(out.images, seeds, warnings, type(scheduler).__name__)
