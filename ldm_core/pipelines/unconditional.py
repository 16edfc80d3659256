"""Unconditional latent diffusion (paper §4.2): noise in, images out.

Runs the paper's CelebA-HQ, FFHQ and LSUN models (converted from their original checkpoints,
`ldm_core/zoo`, or CompVis/ldm-celebahq-256 from the hub: VQModel + UNet2DModel + DDIM, as
diffusers' `LDMPipeline`) and the built-in Shapes World model, with what `LDMPipeline` lacks:
one generator per image (batch-invariant seeds), samplers, DDIM eta, a step callback that can
interrupt, input checks. The UNet runs on any latent size its downsampling divides (the paper
samples beyond the training size convolutionally, §4.3.2).
"""
from __future__ import annotations

import torch
from diffusers import DiffusionPipeline

from .common import (
    DEFAULT_SAMPLER,
    PipelineOutput,
    StepCallback,
    check_steps,
    denoise,
    make_generators,
    make_scheduler,
    per_image_noise,
    seeds_or_default,
)
from .latents import decode_latents, latent_channels, latent_shape, to_pil, vae_scale_factor


def unet_multiple(unet) -> int:
    """The latent side's multiple the UNet's downsampling needs (2 per level after the first)."""
    return 2 ** (len(unet.config.block_out_channels) - 1)


def check_size_and_schedule(vae, unet, height: int, width: int, steps: int, seeds: list[int], eta: float,
                            concat_channels: int = 0) -> None:
    """The checks the noise-to-image pipelines make (`concat_channels`: conditioning channels the UNet
    takes after the latent's, semantic synthesis)."""
    multiple = vae_scale_factor(vae) * unet_multiple(unet)
    if height % multiple or width % multiple:
        raise ValueError(f"height and width must be multiples of {multiple} for this model (its autoencoder "
                         f"downsamples {vae_scale_factor(vae)}x, its UNet {unet_multiple(unet)}x more), "
                         f"got {width}x{height}")
    if not seeds:
        raise ValueError("no images asked for")
    check_steps(steps)
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be between 0 and 1, got {eta}")
    c = latent_channels(vae)
    if unet.config.in_channels != c + concat_channels:
        raise ValueError(f"this UNet takes {unet.config.in_channels} input channels; the autoencoder's latents "
                         f"have {c}" + (f" and the conditioning {concat_channels}" if concat_channels else ""))


class UnconditionalPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "unet->vae"

    def __init__(self, vae, unet, scheduler):
        super().__init__()
        self.register_modules(vae=vae, unet=unet, scheduler=scheduler)
        self.published_scheduler_config = dict(scheduler.config)   # each call samples with a fresh scheduler

    def check_inputs(self, height, width, steps, seeds, eta):
        check_size_and_schedule(self.vae, self.unet, height, width, steps, seeds, eta)

    # Copied from ldm_core.pipelines.text2img.Text2ImgPipeline.prepare_latents
    def prepare_latents(self, scheduler, n, height, width, generators, dtype):
        shape = latent_shape(self.vae, n, height, width)
        return per_image_noise(shape, generators, self.device, dtype) * scheduler.init_noise_sigma  # (B, C, h, w)

    @torch.inference_mode()
    def __call__(self, height: int = 64, width: int = 64, num_inference_steps: int = 50,
                 seeds: list[int] | None = None, sampler: str = DEFAULT_SAMPLER, eta: float = 0.0,
                 callback: StepCallback | None = None, output_type: str = "pil") -> PipelineOutput:
        # 1. inputs
        seeds = seeds_or_default(seeds)
        self.check_inputs(height, width, num_inference_steps, seeds, eta)
        scheduler = make_scheduler(self.published_scheduler_config, sampler)
        generators = make_generators(seeds)
        # 2. latents
        latents = self.prepare_latents(scheduler, len(seeds), height, width, generators, self.unet.dtype)
        # 3. denoising loop
        scheduler.set_timesteps(num_inference_steps, device=self.device)
        latents = denoise(lambda x, t: self.unet(x, t).sample, scheduler, latents, scheduler.timesteps, 1.0,
                          generators, callback, eta)
        # 4. decode
        name = type(scheduler).__name__
        if output_type == "latent":
            return PipelineOutput(latents, seeds, [], name)
        return PipelineOutput(to_pil(decode_latents(self.vae, latents.to(self.vae.dtype))), seeds, [], name)
