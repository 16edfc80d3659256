"""Inpainting (paper §4.5), diffusers-shaped.

The masked image is encoded and concatenated with the downsampled mask to the latent
input: UNet input = [latents (C) | mask (1) | masked-image latents (C)], the layout of
both the paper's inpainting LDM and Stable Diffusion inpainting, so the same class runs
the built-in model and `stable-diffusion-inpainting` checkpoints. Pixels outside the
mask come back unchanged; inside, the result fades in over a soft seam (`mask_blur`) from the
colours just outside the mask (never from what the mask covered: no ghost of a removed object).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from PIL import Image
from scipy import ndimage

from ..options import MASK_DOWNSAMPLING, MASK_MAX, MASK_NEAREST
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
    make_generators,
    make_scheduler,
    per_image_noise,
)
from .latents import (
    COORD_CHANNELS,
    decode_latents,
    encode_latents,
    latent_channels,
    latent_shape,
    pad_edges,
    pad_multiple,
    pil_to_tensor,
    to_pil,
    vae_scale_factor,
    with_coords,
)

MASK_THRESHOLD = 0.5   # a mask pixel above this (of 1 = white) is repainted


def mask_latents(mask: torch.Tensor, size, mode: str = MASK_MAX) -> torch.Tensor:
    """(B, 1, H, W) binary mask -> (B, 1, h, w). "max": a latent cell is "repaint" when any of
    its pixels is (max-pooling, so thin brush strokes are never lost); "nearest": one pixel per
    cell decides, as diffusers' StableDiffusionInpaintPipeline does."""
    if mode == MASK_MAX:
        return F.adaptive_max_pool2d(mask, tuple(size))
    if mode == MASK_NEAREST:
        return F.interpolate(mask, size=tuple(size))
    raise ValueError(f"mask_downsampling must be one of {', '.join(MASK_DOWNSAMPLING)}, got {mode!r}")


def pad_to_multiple(image: Image.Image, mask: Image.Image, multiple: int) -> tuple[Image.Image, Image.Image]:
    """Pad on the right and bottom to sides that are multiples of `multiple`: the image by
    repeating its edge pixels, the mask with "keep" (the padding is cropped off afterwards)."""
    w, h = image.size
    pw, ph = -w % multiple, -h % multiple
    if not pw and not ph:
        return image, mask
    m = np.pad(np.asarray(mask), ((0, ph), (0, pw)), constant_values=0)
    return pad_edges(image, multiple), Image.fromarray(m)


def seam(mask: Image.Image, mask_blur: float) -> tuple[np.ndarray, float, str | None]:
    """How the generated picture is laid over the original: alpha (H, W), the generated share of each
    pixel (0 outside the mask; inside, 0.5 at the border rising linearly to 1 at 2 x `mask_blur` px
    in), the ramp's width in px, and a note when it had to be narrowed: it may reach at most half way
    to the mask's middle, so that the middle is all new."""
    m = np.asarray(mask) > MASK_THRESHOLD * 255                      # (H, W) True = repaint
    if not m.any() or m.all() or mask_blur <= 0:                     # nothing kept to fade from: all new
        return m.astype(np.float32), 0.0, None
    depth = ndimage.distance_transform_edt(m)                       # px to the nearest kept pixel
    width, note = 2 * mask_blur, None
    if width > depth.max() / 2:
        width = depth.max() / 2
        note = (f"mask blur {mask_blur:g} px is wider than this mask allows (it is {2 * depth.max():.0f} px "
                f"across at its widest): the seam used {width / 2:g} px, so that the mask's middle is all new")
    alpha = np.where(m, 0.5 + 0.5 * np.clip((depth - 1) / max(width - 1, 1e-6), 0, 1), 0.0).astype(np.float32)
    return alpha, float(width), note


def outside_colours(original: np.ndarray, m: np.ndarray) -> np.ndarray:
    """(H, W, 3): each pixel's colour as the nearest pixel outside the mask `m` has it: the picture
    continued into the mask from its border, as outpainting's new area is (`tasks.inpaint.extend`)."""
    rows, cols = ndimage.distance_transform_edt(m, return_distances=False, return_indices=True)
    return original[rows, cols]


def blend_outside_mask(original: Image.Image, generated: Image.Image, mask: Image.Image, mask_blur: float
                       ) -> Image.Image:
    """Keep `original` exactly where mask is 0; inside, fade `generated` in over `seam`'s ramp (0: a
    hard edge) from the colours just outside the mask, never from the pixels the mask covered."""
    alpha, width, _ = seam(mask, mask_blur)
    o, g = np.asarray(original, dtype=np.float32), np.asarray(generated, dtype=np.float32)
    if width > 0:
        edge = outside_colours(o, np.asarray(mask) > MASK_THRESHOLD * 255)
        o_in = edge * (1 - alpha[..., None]) + g * alpha[..., None]
    else:
        o_in = g
    out = np.where(alpha[..., None] > 0, o_in, o)
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


def keep_outside_mask(original: Image.Image, images: list, mask: Image.Image, mask_blur: float
                      ) -> tuple[list, list[str]]:
    """`blend_outside_mask` over a batch, and the seam's note (if any) as a warning for the user."""
    note = seam(mask, mask_blur)[2]
    return [blend_outside_mask(original, im, mask, mask_blur) for im in images], [note] if note else []


class InpaintPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->unet->vae"

    # Copied from ldm_core.pipelines.text2img.Text2ImgPipeline.__init__
    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.published_scheduler_config = dict(scheduler.config)   # each call samples with a fresh scheduler

    @staticmethod
    def unet_in_channels(latent_channels: int, *, coords: bool = False) -> int:
        """latents (C) + mask (1) + masked-image latents (C) (+ coordinate maps)."""
        return 2 * latent_channels + 1 + COORD_CHANNELS * coords

    def check_inputs(self, prompts, negative_prompts, height, width, steps, guidance_scale, seeds, mask_downsampling):
        check_common(prompts, negative_prompts, seeds, height, width, steps, guidance_scale,
                     vae_scale_factor(self.vae))
        c = latent_channels(self.vae)
        check_unet_channels(self.unet, {self.unet_in_channels(c): "latents + mask + masked-image latents",
                                        self.unet_in_channels(c, coords=True): "and coordinate maps"}, "inpainting")
        if mask_downsampling not in MASK_DOWNSAMPLING:
            raise ValueError(f"mask_downsampling must be one of {', '.join(MASK_DOWNSAMPLING)}, "
                             f"got {mask_downsampling!r}")

    def prepare_mask_latents(self, image: Image.Image, mask: Image.Image, n: int, dtype,
                             downsampling: str = MASK_MAX):
        img = pil_to_tensor(image).to(self.device, self.vae.dtype)      # (1, 3, H, W)
        m = torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None, None].to(self.device)
        m = (m > MASK_THRESHOLD).to(img.dtype)                           # (1, 1, H, W), 1 = repaint
        masked = img * (1 - m)                                           # repaint region set to 0 (grey)
        masked_latents = encode_latents(self.vae, masked).to(dtype)      # (1, C, h, w): the posterior's mode
        m_lat = mask_latents(m, masked_latents.shape[-2:], downsampling).to(dtype)
        return m_lat.expand(n, -1, -1, -1), masked_latents.expand(n, -1, -1, -1)

    # Copied from ldm_core.pipelines.text2img.Text2ImgPipeline.prepare_latents
    def prepare_latents(self, scheduler, n, height, width, generators, dtype):
        shape = latent_shape(self.vae, n, height, width)
        return per_image_noise(shape, generators, self.device, dtype) * scheduler.init_noise_sigma  # (B, C, h, w)

    def unet_model(self, cond: torch.Tensor, mask: torch.Tensor, masked_latents: torch.Tensor, do_cfg: bool):
        """The UNet as the denoising loop calls it: [latents | mask | masked-image latents] (B, 2C+1, h, w)."""
        extra = torch.cat([mask, masked_latents], 1)                     # (B, C+1, h, w)
        if do_cfg:
            extra = torch.cat([extra] * 2)
        n = self.unet.config.in_channels
        return lambda x, t: self.unet(with_coords(torch.cat([x, extra], 1), n), t, encoder_hidden_states=cond).sample

    @torch.inference_mode()
    def __call__(self, prompt: str | list[str], image: Image.Image, mask_image: Image.Image,
                 negative_prompt: str | list[str] = "", height: int | None = None, width: int | None = None,
                 num_inference_steps: int = 25, guidance_scale: float = 5.0, seeds: list[int] | None = None,
                 sampler: str = DEFAULT_SAMPLER, callback: StepCallback | None = None, mask_blur: float = 2.0,
                 output_type: str = "pil", keep_unmasked: bool = True,
                 mask_downsampling: str = MASK_MAX) -> PipelineOutput:
        # 1. inputs: work at (width, height), default the image's own size, padded to what the
        #    autoencoder needs and cropped back at the end
        width, height = width or image.width, height or image.height
        if image.size != (width, height):
            image = image.resize((width, height), Image.LANCZOS)
        if mask_image.size != (width, height):
            mask_image = mask_image.resize((width, height), Image.NEAREST)
        work, work_mask = pad_to_multiple(image, mask_image, pad_multiple(self.vae))
        prompts, negs, seeds = batch_inputs(prompt, negative_prompt, seeds)
        self.check_inputs(prompts, negs, work.height, work.width, num_inference_steps, guidance_scale, seeds,
                          mask_downsampling)
        scheduler = make_scheduler(self.published_scheduler_config, sampler)
        generators = make_generators(seeds)
        # 2. conditioning: text, and mask + masked image concatenated to the latents
        do_cfg = guided(guidance_scale)
        cond, warnings = encode_guided(self.tokenizer, self.text_encoder, prompts, negs, do_cfg, self.device)
        mask, masked_latents = self.prepare_mask_latents(work, work_mask, len(prompts), cond.dtype, mask_downsampling)
        # 3. latents
        latents = self.prepare_latents(scheduler, len(prompts), work.height, work.width, generators, cond.dtype)
        # 4. denoising loop
        scheduler.set_timesteps(num_inference_steps, device=self.device)
        latents = denoise(self.unet_model(cond, mask, masked_latents, do_cfg), scheduler, latents,
                          scheduler.timesteps, guidance_scale, generators, callback)
        # 5. decode, crop the padding off, then keep every pixel outside the mask
        # Copied from ldm_core.pipelines.text2img.Text2ImgPipeline.__call__: decode
        name = type(scheduler).__name__
        if output_type == "latent":
            return PipelineOutput(latents, seeds, warnings, name)
        images = to_pil(decode_latents(self.vae, latents.to(self.vae.dtype)))
        # End copy
        images = [im.crop((0, 0, width, height)) for im in images]
        if keep_unmasked:
            images, seam_notes = keep_outside_mask(image, images, mask_image, mask_blur)
            warnings = [*warnings, *seam_notes]
        return PipelineOutput(images, seeds, warnings, name)
