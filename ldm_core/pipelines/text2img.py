"""Text -> image latent diffusion (paper §4.3.1), diffusers-shaped.

Runs the built-in Shapes model and the paper's own `CompVis/ldm-text2im-large-256`
(AutoencoderKL + LDMBert + UNet2DConditionModel) with what diffusers' LDM pipeline
lacks: negative prompt + classifier-free guidance, one generator per image, samplers,
a step callback that can interrupt, and input checks.

The built-in UNet is also the layout model: it takes a box grounding map after the latents
(`ldm_core.grounding`), which text alone leaves empty.

`regions`: boxes with prompts of their own, each guiding its box (MultiDiffusion, `regional.py`).
"""
from __future__ import annotations

import torch
from diffusers import DiffusionPipeline

from ..grounding import GROUNDING_CHANNELS
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
    takes_grounding,
)
from .latents import decode_latents, latent_channels, latent_shape, to_pil, vae_scale_factor, with_coords
from .regional import check_regions, region_masks, regional_conditioning, regional_model


class Text2ImgPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.published_scheduler_config = dict(scheduler.config)   # each call samples with a fresh scheduler

    @staticmethod
    def unet_in_channels(latent_channels: int, *, grounding: bool = False, coords: bool = False) -> int:
        """The UNet input this pipeline feeds: latents (C), a box grounding map (G, empty without
        boxes) when the UNet was trained with one, and (x, y) coordinate maps when it takes them."""
        return input_width(latent_channels, grounding=grounding, coords=coords)

    def accepted_widths(self) -> dict[int, str]:
        c = latent_channels(self.vae)
        return {self.unet_in_channels(c, grounding=g, coords=k): "latents" + " + a grounding map" * g
                + " + coordinate maps" * k for g in (False, True) for k in (False, True)}

    def check_inputs(self, prompts, negative_prompts, height, width, steps, guidance_scale, seeds):
        check_common(prompts, negative_prompts, seeds, height, width, steps, guidance_scale,
                     vae_scale_factor(self.vae))
        check_unet_channels(self.unet, self.accepted_widths(), "text-to-image")

    def prepare_latents(self, scheduler, n, height, width, generators, dtype):
        shape = latent_shape(self.vae, n, height, width)
        return per_image_noise(shape, generators, self.device, dtype) * scheduler.init_noise_sigma  # (B, C, h, w)

    def unet_model(self, cond: torch.Tensor):
        """The UNet as the denoising loop calls it: the latents, an empty grounding map for a
        grounded UNet, coordinate maps for a UNet that takes them; the text through cross-attention."""
        n = self.unet.config.in_channels
        grounded = takes_grounding(n, latent_channels(self.vae))

        def model(x, t):
            if grounded:
                x = torch.cat([x, x.new_zeros(x.shape[0], GROUNDING_CHANNELS, *x.shape[2:])], 1)  # (B, C + G, h, w)
            return self.unet(with_coords(x, n), t, encoder_hidden_states=cond).sample
        return model

    def regional_model(self, cond: torch.Tensor, regions, size: tuple[int, int], do_cfg: bool, warnings: list[str]):
        """The model function with each region's box guided by its own prompt (`regional.py`); the
        warnings of region prompts cut to what the encoder reads join `warnings`."""
        texts = [p for p, _ in regions]
        # (R, L, D): one text each, as the base prompt is encoded
        region_cond, cut = encode_guided(self.tokenizer, self.text_encoder, texts, texts, False, self.device)
        warnings += [w.replace("the prompt", "a region's prompt", 1) for w in cut]
        masks = region_masks([b for _, b in regions], *size).to(self.device)       # (1 + R, h, w)
        return regional_model(self.unet_model(regional_conditioning(cond, region_cond, do_cfg)), masks, do_cfg)

    @torch.inference_mode()
    def __call__(self, prompt: str | list[str], negative_prompt: str | list[str] = "", height: int = 64,
                 width: int = 64, num_inference_steps: int = 25, guidance_scale: float = 5.0,
                 seeds: list[int] | None = None, sampler: str = DEFAULT_SAMPLER,
                 callback: StepCallback | None = None, output_type: str = "pil",
                 regions: list[tuple[str, tuple[float, float, float, float]]] | None = None) -> PipelineOutput:
        # 1. inputs
        prompts, negs, seeds = batch_inputs(prompt, negative_prompt, seeds)
        self.check_inputs(prompts, negs, height, width, num_inference_steps, guidance_scale, seeds)
        check_regions(regions or [])
        scheduler = make_scheduler(self.published_scheduler_config, sampler)
        generators = make_generators(seeds)
        # 2. conditioning
        cond, warnings = encode_guided(self.tokenizer, self.text_encoder, prompts, negs, guided(guidance_scale),
                                       self.device)  # (2B or B, L, D)
        # 3. latents
        latents = self.prepare_latents(scheduler, len(prompts), height, width, generators, cond.dtype)
        # 4. denoising loop
        scheduler.set_timesteps(num_inference_steps, device=self.device)
        model = self.unet_model(cond) if not regions else self.regional_model(cond, regions, latents.shape[2:],
                                                                               guided(guidance_scale), warnings)
        latents = denoise(model, scheduler, latents, scheduler.timesteps, guidance_scale, generators, callback)
        # 5. decode
        # Block: decode
        name = type(scheduler).__name__
        if output_type == "latent":
            return PipelineOutput(latents, seeds, warnings, name)
        images = to_pil(decode_latents(self.vae, latents.to(self.vae.dtype)))
        # End block
        return PipelineOutput(images, seeds, warnings, name)
