"""Image -> image with a text -> image model: SDEdit (Meng et al., ICLR 2022), diffusers-shaped.

The input image is encoded, taken forward through the noise schedule to `strength` (0: not
at all, 1: to pure noise) and denoised from there towards the prompt, so the result keeps
the input's layout and colours in proportion to 1 - strength. Runs every model the
text -> image pipeline runs, on the same weights (the stack holds them once).
"""
from __future__ import annotations

import torch
from diffusers import DiffusionPipeline
from PIL import Image

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
from .latents import (
    decode_latents,
    encode_latents,
    latent_channels,
    pad_edges,
    pad_multiple,
    pil_to_tensor,
    to_pil,
    vae_scale_factor,
    with_coords,
)


def start_step(steps: int, strength: float) -> int:
    """The first of `steps` sampling steps that runs: strength 1 runs them all, 0 none."""
    return steps - min(int(round(steps * strength)), steps)


class Img2ImgPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->unet->vae"

    # Copied from ldm_core.pipelines.text2img.Text2ImgPipeline.__init__
    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.published_scheduler_config = dict(scheduler.config)   # each call samples with a fresh scheduler

    # Copied from ldm_core.pipelines.text2img.Text2ImgPipeline.unet_in_channels
    @staticmethod
    def unet_in_channels(latent_channels: int, *, grounding: bool = False, coords: bool = False) -> int:
        """The UNet input this pipeline feeds: latents (C), a box grounding map (G, empty without
        boxes) when the UNet was trained with one, and (x, y) coordinate maps when it takes them."""
        return input_width(latent_channels, grounding=grounding, coords=coords)

    # Copied from ldm_core.pipelines.text2img.Text2ImgPipeline.accepted_widths
    def accepted_widths(self) -> dict[int, str]:
        c = latent_channels(self.vae)
        return {self.unet_in_channels(c, grounding=g, coords=k): "latents" + " + a grounding map" * g
                + " + coordinate maps" * k for g in (False, True) for k in (False, True)}

    def check_inputs(self, prompts, negative_prompts, height, width, steps, guidance_scale, seeds, strength):
        check_common(prompts, negative_prompts, seeds, height, width, steps, guidance_scale,
                     vae_scale_factor(self.vae))
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be between 0 and 1, got {strength}")
        check_unet_channels(self.unet, self.accepted_widths(), "text-to-image")

    def prepare_latents(self, scheduler, image: Image.Image, timestep, generators, dtype):
        """The input's latents taken forward to `timestep`: (B, C, h, w), image i noised by generator i."""
        x = pil_to_tensor(image).to(self.device, self.vae.dtype)          # (1, 3, H, W)
        z = encode_latents(self.vae, x).to(dtype)                          # (1, C, h, w): the posterior's mode
        z = z.expand(len(generators), -1, -1, -1)
        noise = per_image_noise(tuple(z.shape), generators, self.device, dtype)
        return scheduler.add_noise(z, noise, timestep.repeat(len(generators)))

    # Copied from ldm_core.pipelines.text2img.Text2ImgPipeline.unet_model
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

    @torch.inference_mode()
    def __call__(self, prompt: str | list[str], image: Image.Image, strength: float = 0.75,
                 negative_prompt: str | list[str] = "", height: int | None = None, width: int | None = None,
                 num_inference_steps: int = 25, guidance_scale: float = 5.0, seeds: list[int] | None = None,
                 sampler: str = DEFAULT_SAMPLER, callback: StepCallback | None = None,
                 output_type: str = "pil") -> PipelineOutput:
        # 1. inputs: at (width, height), default the image's own size, padded (edge pixels repeated) to the
        #    autoencoder's multiple and cropped back at the end
        width, height = width or image.width, height or image.height
        image = image.convert("RGB")
        if image.size != (width, height):
            image = image.resize((width, height), Image.LANCZOS)
        work = pad_edges(image, pad_multiple(self.vae))
        prompts, negs, seeds = batch_inputs(prompt, negative_prompt, seeds)
        self.check_inputs(prompts, negs, work.height, work.width, num_inference_steps, guidance_scale, seeds,
                          strength)
        scheduler = make_scheduler(self.published_scheduler_config, sampler)
        scheduler.set_timesteps(num_inference_steps, device=self.device)
        first = start_step(num_inference_steps, strength) * scheduler.order
        timesteps = scheduler.timesteps[first:]
        if len(timesteps) == 0:      # strength 0: nothing to redraw, the input as it is
            return PipelineOutput([image.copy() for _ in seeds], seeds, [], type(scheduler).__name__)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(first)
        generators = make_generators(seeds)
        # 2. conditioning
        do_cfg = guided(guidance_scale)
        cond, warnings = encode_guided(self.tokenizer, self.text_encoder, prompts, negs, do_cfg, self.device)
        # 3. latents: the input, noised to the first timestep that runs
        latents = self.prepare_latents(scheduler, work, timesteps[:1], generators, cond.dtype)
        # 4. denoising loop, from there
        latents = denoise(self.unet_model(cond), scheduler, latents, timesteps, guidance_scale, generators, callback)
        # 5. decode and crop the padding off
        # Copied from ldm_core.pipelines.text2img.Text2ImgPipeline.__call__: decode
        name = type(scheduler).__name__
        if output_type == "latent":
            return PipelineOutput(latents, seeds, warnings, name)
        images = to_pil(decode_latents(self.vae, latents.to(self.vae.dtype)))
        # End copy
        return PipelineOutput([im.crop((0, 0, width, height)) for im in images], seeds, warnings, name)
