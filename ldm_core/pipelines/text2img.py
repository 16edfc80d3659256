"""Text -> image latent diffusion (paper §4.3.1), diffusers-shaped.

Runs the built-in Shapes model and the paper's own `CompVis/ldm-text2im-large-256`
(AutoencoderKL + LDMBert + UNet2DConditionModel) with what diffusers' LDM pipeline
lacks: negative prompt + classifier-free guidance, one generator per image, samplers,
a step callback that can interrupt, and input checks.
"""
from __future__ import annotations

import torch
from diffusers import DiffusionPipeline

from .common import (COORD_CHANNELS, DEFAULT_SAMPLER, GROUNDING_CHANNELS, PipelineOutput, StepCallback, apply_guidance,
                     decode_latents, encode_prompts, latent_channels, make_generators, make_scheduler, per_image_noise,
                     report_step, step_kwargs, text_limit, to_pil, truncation_warnings, vae_scale_factor,
                     with_coords)


class Text2ImgPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.published_scheduler_config = dict(scheduler.config)   # kept whatever sampler runs

    @staticmethod
    def unet_in_channels(latent_channels: int, *, grounding: bool = False, coords: bool = False) -> int:
        """The UNet input this pipeline feeds: latents (C), a box grounding map (G, empty without
        boxes) when the UNet was trained with one, and (x, y) coordinate maps when it takes them."""
        return latent_channels + GROUNDING_CHANNELS * grounding + COORD_CHANNELS * coords

    @property
    def scale_factor(self) -> int:
        return vae_scale_factor(self.vae)

    def check_inputs(self, prompts, negative_prompts, height, width, steps, guidance_scale, seeds):
        f = self.scale_factor
        if height % f or width % f:
            raise ValueError(f"height and width must be multiples of {f} (the autoencoder's downsampling), "
                             f"got {height}x{width}")
        if len(negative_prompts) != len(prompts):
            raise ValueError(f"{len(negative_prompts)} negative prompts for {len(prompts)} prompts")
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} images")
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        c, n = self.task_in_channels(), self.unet.config.in_channels
        widths = [c, c + COORD_CHANNELS]
        if self.accepts_grounding:
            widths += [c + GROUNDING_CHANNELS, c + GROUNDING_CHANNELS + COORD_CHANNELS]
        if n not in widths:
            raise ValueError(f"this UNet takes {n} input channels; a {self.task_inputs} UNet takes {c} "
                             f"({self.task_inputs}) or {c + COORD_CHANNELS} (+ coordinate maps)"
                             + (f", or {c + GROUNDING_CHANNELS} (+ a box grounding map)" if self.accepts_grounding
                                else ""))

    task_inputs = "latents"
    accepts_grounding = True   # a layout-grounded UNet also draws from text alone (an empty grounding map)
    _grounding = None          # (B, G, h, w) box grounding map, set by Layout2ImgPipeline for one call

    @property
    def grounded(self) -> bool:
        """Whether the UNet takes a box grounding map after the latents (the built-in layout model)."""
        extra = self.unet.config.in_channels - self.task_in_channels()
        return self.accepts_grounding and extra in (GROUNDING_CHANNELS, GROUNDING_CHANNELS + COORD_CHANNELS)

    def task_in_channels(self) -> int:
        """Input channels the task itself feeds the UNet (coordinate maps come on top)."""
        return latent_channels(self.vae)

    @staticmethod
    def batch_inputs(prompt, negative_prompt, seeds) -> tuple[list[str], list[str], list[int]]:
        """One prompt, negative prompt and seed per image (a single prompt is repeated)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        seeds = list(seeds) if seeds is not None else list(range(len(prompts)))
        if len(prompts) == 1 and len(seeds) > 1:
            prompts = prompts * len(seeds)
        negs = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
        return prompts, negs, seeds

    def prompt_warnings(self, prompts: list[str], negative_prompts: list[str], do_cfg: bool) -> list[str]:
        """What the user should know about their prompts: those cut to what the encoder reads."""
        limit = text_limit(self.tokenizer, self.text_encoder)
        return (truncation_warnings(self.tokenizer, limit, prompts) +
                (truncation_warnings(self.tokenizer, limit, negative_prompts, "negative prompt") if do_cfg else []))

    def encode_prompt(self, prompts: list[str], negative_prompts: list[str], do_cfg: bool) -> torch.Tensor:
        cond = encode_prompts(self.tokenizer, self.text_encoder, prompts, self.device)  # (B, L, D)
        if not do_cfg:
            return cond
        uncond = encode_prompts(self.tokenizer, self.text_encoder, negative_prompts, self.device)
        return torch.cat([uncond, cond])  # (2B, L, D)

    def prepare_latents(self, n, height, width, generators, dtype):
        shape = (n, latent_channels(self.vae), height // self.scale_factor, width // self.scale_factor)
        latents = per_image_noise(shape, generators, self.device, dtype)  # (B, C, h, w)
        return latents * self.scheduler.init_noise_sigma

    def denoise(self, latents, cond, steps, guidance_scale, generators, callback, unet_kwargs=None):
        """The numbered loop, shared by the text-conditioned tasks."""
        do_cfg = guidance_scale > 1.0
        self.scheduler.set_timesteps(steps, device=self.device)
        timesteps = self.scheduler.timesteps
        extra = step_kwargs(self.scheduler, generators)
        for i, t in enumerate(timesteps):
            x = torch.cat([latents] * 2) if do_cfg else latents
            x = self.scheduler.scale_model_input(x, t)
            x = self.unet_input(x, do_cfg)
            noise_pred = self.unet(x, t, encoder_hidden_states=cond, **(unet_kwargs or {})).sample
            if do_cfg:
                noise_pred = apply_guidance(noise_pred, guidance_scale)
            latents = self.scheduler.step(noise_pred, t, latents, **extra).prev_sample
            report_step(callback, i + 1, len(timesteps), t, latents)
        return latents

    def unet_input(self, x, do_cfg):
        """Hook for tasks that concatenate conditioning to the latent input (inpainting); here
        the box grounding map for a grounded UNet (empty for text alone; empty in the
        unconditional half, so guidance pushes towards the boxes) and the coordinate maps,
        for a UNet that takes them."""
        if self.grounded:
            g = self._grounding
            if g is None:
                g = x.new_zeros(x.shape[0], GROUNDING_CHANNELS, *x.shape[2:])
            elif do_cfg:
                g = torch.cat([torch.zeros_like(g), g])
            x = torch.cat([x, g.to(x.dtype)], 1)  # (B, C + G, h, w)
        return with_coords(x, self.unet.config.in_channels)

    @torch.inference_mode()
    def __call__(self, prompt: str | list[str], negative_prompt: str | list[str] = "", height: int = 64,
                 width: int = 64, num_inference_steps: int = 25, guidance_scale: float = 5.0,
                 seeds: list[int] | None = None, sampler: str = DEFAULT_SAMPLER,
                 callback: StepCallback | None = None, output_type: str = "pil") -> PipelineOutput:
        # 1. inputs
        prompts, negs, seeds = self.batch_inputs(prompt, negative_prompt, seeds)
        self.check_inputs(prompts, negs, height, width, num_inference_steps, guidance_scale, seeds)
        self.scheduler = make_scheduler(self.published_scheduler_config, sampler)
        generators = make_generators(seeds)
        # 2. conditioning
        cond = self.encode_prompt(prompts, negs, guidance_scale > 1.0)
        warnings = self.prompt_warnings(prompts, negs, guidance_scale > 1.0)
        # 3. latents
        latents = self.prepare_latents(len(prompts), height, width, generators, cond.dtype)
        # 4. denoising loop
        latents = self.denoise(latents, cond, num_inference_steps, guidance_scale, generators, callback)
        # 5. decode
        if output_type == "latent":
            return PipelineOutput(latents, seeds, warnings)
        images = decode_latents(self.vae, latents.to(self.vae.dtype))
        return PipelineOutput(to_pil(images), seeds, warnings)
