"""The paper's own inpainting model (§4.5, Table 7 "big"; zoo `inpainting_big`), diffusers-shaped.

It differs from InpaintPipeline's layout (latents | mask | masked-image latents, the masked region
grey, text through cross-attention), so it has a class of its own. As CompVis/latent-diffusion@a506df5
scripts/inpaint.py does it (read, not copied):
  - the mask is binarised at 0.5 (>= 0.5: repaint); masked_image = (1 - mask) * image; image, mask
    and masked image are then all mapped by x * 2 - 1, so the mask is in {-1, 1} and the masked
    region of the masked image is -1 (black);
  - c = first stage encode of the masked image (VQModelInterface.encode: before quantisation),
    cc = the {-1, 1} mask resized to the latent grid (F.interpolate, nearest), c = cat(c, cc);
  - DDIM (50 steps, eta 0) with UNet input cat([x, c]) (ldm/models/diffusion/ddpm.py DiffusionWrapper,
    "concat": the noisy latent first): 3 + 3 + 1 = 7 channels;
  - decode (with quantisation: LatentDiffusion.decode_first_stage), then
    inpainted = (1 - mask) * image + mask * predicted.
Here the last step is `keep_unmasked` (InpaintPipeline's blend, with its `mask_blur` seam; at blur 0
it is the script's formula), and `mask_downsampling="nearest"` is the script's resize ("max" keeps
thin strokes). There is no text conditioning and no unconditional prediction: a prompt is ignored
with a warning, and guidance above 1 is refused.
"""
from __future__ import annotations

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from ..options import DDIM, MASK_DOWNSAMPLING, MASK_MAX
from .common import (
    PipelineOutput,
    StepCallback,
    check_steps,
    check_unet_channels,
    denoise,
    make_generators,
    make_scheduler,
    per_image_noise,
    seeds_or_default,
)
from .inpaint import keep_outside_mask, mask_latents, pad_to_multiple
from .latents import decode_latents, encode_latents, latent_channels, latent_shape, to_pil, vae_scale_factor

NO_PROMPT = "this model has no text conditioning (the paper's inpainting LDM): the prompt was ignored"


def script_batch(image: Image.Image, mask: Image.Image, device, dtype) -> dict[str, torch.Tensor]:
    """scripts/inpaint.py make_batch: image (1, 3, H, W), mask (1, 1, H, W) and masked image, each
    in [-1, 1]; the mask binarised at 0.5 first, the masked region of the masked image -1."""
    img = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    m = torch.from_numpy(np.asarray(mask.convert("L"), dtype=np.float32) / 255.0)[None, None]
    m = (m >= 0.5).float()
    batch = {"image": img, "mask": m, "masked_image": (1 - m) * img}
    return {k: (v * 2.0 - 1.0).to(device, dtype) for k, v in batch.items()}


class PaperInpaintPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "unet->vae"

    def __init__(self, vae, unet, scheduler):
        super().__init__()
        self.register_modules(vae=vae, unet=unet, scheduler=scheduler)
        self.published_scheduler_config = dict(scheduler.config)   # each call samples with a fresh scheduler

    @staticmethod
    def unet_in_channels(latent_channels: int) -> int:
        """latents (C) + masked-image latents (C) + mask (1), in that order."""
        return 2 * latent_channels + 1

    @property
    def pad_multiple(self) -> int:
        """Image sides the model takes: the autoencoder's factor x 2^(the UNet's downsamplings)."""
        return vae_scale_factor(self.vae) * 2 ** (len(self.unet.config.block_out_channels) - 1)

    def check_inputs(self, height, width, steps, guidance_scale, seeds, mask_downsampling):
        c = latent_channels(self.vae)
        check_unet_channels(self.unet, {self.unet_in_channels(c): "latents + masked-image latents + mask"},
                            "paper inpainting")
        if height % self.pad_multiple or width % self.pad_multiple:
            raise ValueError(f"height and width must be multiples of {self.pad_multiple}, got {height}x{width}")
        check_steps(steps)
        if guidance_scale > 1:
            raise ValueError(f"guidance_scale {guidance_scale}: this model has no unconditional prediction to "
                             f"guide with; use 1")
        if not seeds:
            raise ValueError("at least one seed is needed")
        if mask_downsampling not in MASK_DOWNSAMPLING:
            raise ValueError(f"mask_downsampling must be one of {', '.join(MASK_DOWNSAMPLING)}, "
                             f"got {mask_downsampling!r}")

    def prepare_conditioning(self, image: Image.Image, mask: Image.Image, n: int, dtype,
                             downsampling: str = MASK_MAX) -> torch.Tensor:
        """c = cat(encode(masked image), mask on the latent grid): (n, C + 1, h, w)."""
        batch = script_batch(image, mask, self.device, self.vae.dtype)
        c = encode_latents(self.vae, batch["masked_image"]).to(dtype)      # (1, C, h, w), before quantisation
        cc = mask_latents(batch["mask"], c.shape[-2:], downsampling).to(dtype)   # (1, 1, h, w) in {-1, 1}
        return torch.cat([c, cc], 1).expand(n, -1, -1, -1)

    def prepare_latents(self, scheduler, n, height, width, generators, dtype):
        shape = latent_shape(self.vae, n, height, width)
        return per_image_noise(shape, generators, self.device, dtype) * scheduler.init_noise_sigma  # (B, C, h, w)

    def unet_model(self, cond: torch.Tensor):
        """The UNet as the denoising loop calls it: cat([latents, c]) (B, 2C + 1, h, w)."""
        return lambda x, t: self.unet(torch.cat([x, cond], 1), t).sample

    @torch.inference_mode()
    def __call__(self, image: Image.Image, mask_image: Image.Image, prompt: str | list[str] = "",
                 negative_prompt: str | list[str] = "", height: int | None = None, width: int | None = None,
                 num_inference_steps: int = 50, guidance_scale: float = 1.0, seeds: list[int] | None = None,
                 sampler: str = DDIM, callback: StepCallback | None = None, mask_blur: float = 2.0,
                 output_type: str = "pil", keep_unmasked: bool = True, mask_downsampling: str = MASK_MAX,
                 eta: float = 0.0) -> PipelineOutput:
        # 1. inputs: work at (width, height), default the image's own size, padded to the sides the
        #    autoencoder and UNet take (edges repeated, the padding kept) and cropped back at the end
        width, height = width or image.width, height or image.height
        if image.size != (width, height):
            image = image.resize((width, height), Image.LANCZOS)
        if mask_image.size != (width, height):
            mask_image = mask_image.resize((width, height), Image.NEAREST)
        work, work_mask = pad_to_multiple(image, mask_image, self.pad_multiple)
        seeds = seeds_or_default(seeds)
        self.check_inputs(work.height, work.width, num_inference_steps, guidance_scale, seeds, mask_downsampling)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        warnings = [NO_PROMPT] if any(p.strip() for p in prompts) else []
        scheduler = make_scheduler(self.published_scheduler_config, sampler)
        generators = make_generators(seeds)
        dtype = self.unet.dtype
        # 2. conditioning: the masked image's latent and the mask, concatenated after the latents
        cond = self.prepare_conditioning(work, work_mask, len(seeds), dtype, mask_downsampling)
        # 3. latents
        latents = self.prepare_latents(scheduler, len(seeds), work.height, work.width, generators, dtype)
        # 4. denoising loop (no guidance)
        scheduler.set_timesteps(num_inference_steps, device=self.device)
        latents = denoise(self.unet_model(cond), scheduler, latents, scheduler.timesteps, 1.0, generators,
                          callback, eta)
        name = type(scheduler).__name__
        if output_type == "latent":
            return PipelineOutput(latents, seeds, warnings, name)
        # 5. decode (quantised), crop the padding off, then keep every pixel outside the mask
        images = [im.crop((0, 0, width, height)) for im in to_pil(decode_latents(self.vae, latents.to(self.vae.dtype)))]
        if keep_unmasked:
            images, seam_notes = keep_outside_mask(image, images, mask_image, mask_blur)
            warnings = [*warnings, *seam_notes]
        return PipelineOutput(images, seeds, warnings, name)
