"""4x super-resolution (paper §4.4), diffusers-shaped.

The low-resolution image is concatenated to the latent: with an f = 4 autoencoder, an
HxW input sits exactly on the HxW latent of the 4Hx4W output. This is also the layout of
the paper's `CompVis/ldm-super-resolution-4x-openimages` (VQModel + UNet2DModel), which
the same class runs. Fully convolutional: inputs larger than `tile` are processed as
overlapping latent tiles whose predictions are averaged with smooth weights at every
step (MultiDiffusion), and decoded in overlapping tiles, so memory stays bounded and no
seam shows.

The decoded image is then back-projected onto the input (iterative back-projection, Irani
& Peleg 1991; the data-consistency step of DDRM/DDNM-style restoration): its 4x bicubic
downsampling is made to match the low-resolution input, so the output keeps every bit of
information the input holds, and the autoencoder's errors at low frequencies (colour
shifts on photographs it reconstructs poorly) are taken out. `back_projection=0` turns it off.

A UNet 4 channels wider (`latent_channels * 2 + 3` inputs) also reads the latent of the input's
bicubic upsampling (`bicubic_latent`): where it cannot tell what detail belongs, it can keep
what the autoencoder makes of the smooth upsampling instead of inventing texture.

A grey input (equal channels, e.g. a mode "L" photo) gives a grey output.

`average=K` decodes K samples per seed and returns their mean, a Monte-Carlo estimate of the
posterior mean E[x | input]: what is certain stays, detail the samples disagree on is smoothed.
Pixel error (PSNR) goes down, at K times the compute; K = 1 is a single, sharper sample.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from PIL import Image

from ..options import DDIM
from .common import (
    PipelineOutput,
    StepCallback,
    check_steps,
    denoise,
    make_generators,
    make_scheduler,
    per_image_noise,
    seeds_or_default,
)
from .latents import decode_latents, encode_latents, latent_channels, pil_to_tensor, to_pil, vae_scale_factor


def _tiles(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride)) + [size - tile]
    return sorted(set(starts))


def _windows(h: int, w: int, tile: int, overlap: int):
    """(top, left, height, width) of each overlapping tile of an h x w latent, row by row."""
    for y in _tiles(h, tile, overlap):
        for x in _tiles(w, tile, overlap):
            yield y, x, min(tile, h), min(tile, w)


def _ramp(n: int, overlap: int, device) -> torch.Tensor:
    """1-D weights rising over `overlap` at both ends (never 0, so every pixel is covered)."""
    w = torch.ones(n, device=device)
    if overlap > 0 and n > 2 * overlap:
        r = (torch.arange(overlap, device=device, dtype=torch.float32) + 1) / (overlap + 1)
        w[:overlap], w[-overlap:] = r, r.flip(0)
    return w


def _window_weight(h: int, w: int, overlap: int, device, dtype) -> torch.Tensor:
    """(1, 1, h, w) blending weights of one tile: ramps over `overlap` at its four edges."""
    return (_ramp(h, overlap, device)[:, None] * _ramp(w, overlap, device)[None, :]).to(dtype)[None, None]


def back_project(images: torch.Tensor, low: torch.Tensor, iterations: int) -> torch.Tensor:
    """(B, 3, H, W) images, (B, 3, h, w) their low-resolution input, both in [-1, 1] -> images whose
    bicubic (antialiased) downsampling matches `low`: x <- x + up(low - down(x)), `iterations` times."""
    x = images.float()
    low = low.float()
    for _ in range(iterations):
        down = F.interpolate(x, size=low.shape[-2:], mode="bicubic", antialias=True, align_corners=False)
        x = x + F.interpolate(low - down, size=x.shape[-2:], mode="bicubic", antialias=True, align_corners=False)
    return x.clamp(-1, 1).to(images.dtype)


def bicubic_latent(vae, low: torch.Tensor) -> torch.Tensor:
    """(B, 3, h, w) low-resolution images in [-1, 1] -> (B, C, h, w) normalised latents of their
    bicubic upsampling by the autoencoder's factor: the extra input of a UNet that reads it."""
    f = vae_scale_factor(vae)
    up = F.interpolate(low, scale_factor=f, mode="bicubic", align_corners=False).clamp(-1, 1)  # (B, 3, fh, fw)
    return encode_latents(vae, up)


def sample_seeds(seeds: list[int], average: int) -> list[int]:
    """The noise seeds of `average` samples per seed, seed-major. A seed's first sample uses the
    seed itself (so average=1 is the plain single sample); the others are derived from it."""
    out = []
    for s in seeds:
        out.append(s)
        out += [int(np.random.SeedSequence([s, k]).generate_state(1, np.uint64)[0] >> 1) for k in range(1, average)]
    return out


class SuperResPipeline(DiffusionPipeline):
    def __init__(self, vae, unet, scheduler):
        super().__init__()
        self.register_modules(vae=vae, unet=unet, scheduler=scheduler)
        self.published_scheduler_config = dict(scheduler.config)   # each call samples with a fresh scheduler

    @staticmethod
    def unet_in_channels(latent_channels: int, *, bicubic_latent: bool = False) -> int:
        """latents (C) + the low-resolution RGB image (3) (+ the latent of its bicubic upsampling, C)."""
        return latent_channels + 3 + latent_channels * bicubic_latent

    @property
    def scale_factor(self) -> int:
        return vae_scale_factor(self.vae)

    @property
    def unet_multiple(self) -> int:
        """Latent sides the UNet takes: multiples of 2^(its number of downsamplings). The input is
        padded (edge pixels repeated) to such sides and the output cropped back."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def reads_bicubic_latent(self) -> bool:
        return self.unet.config.in_channels == 2 * latent_channels(self.vae) + 3

    def check_inputs(self, image, steps, back_projection: int = 0, average: int = 1):
        c = latent_channels(self.vae)
        if self.unet.config.in_channels not in (c + 3, 2 * c + 3):
            raise ValueError(f"this UNet takes {self.unet.config.in_channels} channels; a super-resolution UNet "
                             f"takes {c + 3} (latents + low-resolution RGB) or {2 * c + 3} (and the latent of "
                             f"the bicubic upsampling)")
        check_steps(steps)
        if average < 1:
            raise ValueError(f"average is a number of samples per output (1 = one sample), got {average}")
        if back_projection < 0:
            raise ValueError(f"back_projection is a number of iterations (0 = off), got {back_projection}")
        if image.width < 8 or image.height < 8:
            raise ValueError(f"the input is {image.width}x{image.height}; at least 8x8 is needed")

    def _unet(self, x, t):
        kwargs = {}
        if "encoder_hidden_states" in self.unet.forward.__code__.co_varnames and getattr(
                self.unet.config, "cross_attention_dim", None):
            kwargs["encoder_hidden_states"] = torch.zeros(x.shape[0], 1, self.unet.config.cross_attention_dim,
                                                          device=x.device, dtype=x.dtype)
        return self.unet(x, t, **kwargs).sample

    def predict(self, latents, cond, t, tile: int, overlap: int):
        """UNet prediction over the whole (scaled) latent, tile by tile, blended (B, C, h, w). `cond`:
        the low-resolution image (B, 3, h, w), with the bicubic latent after it if the UNet reads one."""
        h, w = latents.shape[-2:]
        x = torch.cat([latents, cond], dim=1)
        if h <= tile and w <= tile:
            return self._unet(x, t)
        out = torch.zeros_like(latents)
        weight = torch.zeros((1, 1, h, w), device=latents.device, dtype=latents.dtype)
        for y, xx, th, tw in _windows(h, w, tile, overlap):
            wt = _window_weight(th, tw, overlap, latents.device, latents.dtype)
            out[..., y:y + th, xx:xx + tw] += self._unet(x[..., y:y + th, xx:xx + tw], t) * wt
            weight[..., y:y + th, xx:xx + tw] += wt
        return out / weight

    def decode(self, latents, tile: int, overlap: int):
        """Decode (B, C, h, w) latents to (B, 3, f*h, f*w), in overlapping tiles when large."""
        h, w = latents.shape[-2:]
        if h <= tile and w <= tile:
            return decode_latents(self.vae, latents)
        f = self.scale_factor
        out = torch.zeros((latents.shape[0], 3, h * f, w * f), device=latents.device, dtype=latents.dtype)
        weight = torch.zeros((1, 1, h * f, w * f), device=latents.device, dtype=latents.dtype)
        for y, xx, th, tw in _windows(h, w, tile, overlap):
            dec = decode_latents(self.vae, latents[..., y:y + th, xx:xx + tw])
            wt = _window_weight(th * f, tw * f, overlap * f, latents.device, dec.dtype)
            out[..., y * f:(y + th) * f, xx * f:(xx + tw) * f] += dec * wt
            weight[..., y * f:(y + th) * f, xx * f:(xx + tw) * f] += wt
        return out / weight

    @torch.inference_mode()
    def __call__(self, image: Image.Image, num_inference_steps: int = 25, seeds: list[int] | None = None,
                 sampler: str = DDIM, callback: StepCallback | None = None, tile: int = 64, overlap: int = 16,
                 output_type: str = "pil", back_projection: int = 5, average: int = 1) -> PipelineOutput:
        # 1. inputs
        self.check_inputs(image, num_inference_steps, back_projection, average)
        seeds = seeds_or_default(seeds)
        scheduler = make_scheduler(self.published_scheduler_config, sampler)
        generators = make_generators(sample_seeds(seeds, average))  # seed-major: B groups of K
        dtype = self.unet.dtype
        low = pil_to_tensor(image).to(self.device, dtype)  # (1, 3, h, w)
        m = self.unet_multiple
        padded = F.pad(low, (0, -image.width % m, 0, -image.height % m), mode="replicate")  # (1, 3, ph, pw)
        cond = padded
        if self.reads_bicubic_latent:
            bic = bicubic_latent(self.vae, padded.to(self.vae.dtype)).to(dtype)  # (1, C, ph, pw)
            cond = torch.cat([padded, bic], 1)  # (1, 3 + C, ph, pw)
        cond = cond.expand(len(generators), -1, -1, -1)  # (B*K, ., ph, pw)
        # 2. latents: one per (padded) input pixel
        shape = (len(generators), latent_channels(self.vae), *padded.shape[-2:])
        latents = per_image_noise(shape, generators, self.device, dtype) * scheduler.init_noise_sigma
        # 3. denoising loop (no text, no guidance)
        scheduler.set_timesteps(num_inference_steps, device=self.device)
        latents = denoise(lambda x, t: self.predict(x, cond, t, tile, overlap), scheduler, latents,
                          scheduler.timesteps, 0.0, generators, callback)
        name = type(scheduler).__name__
        if output_type == "latent":
            return PipelineOutput(latents, seeds, scheduler=name)
        # 4. decode, crop the padding off, and average each seed's K samples
        images = self.decode(latents.to(self.vae.dtype), tile, overlap // 2)  # (B*K, 3, 4ph, 4pw)
        f = self.scale_factor
        images = images[..., :image.height * f, :image.width * f]  # (B*K, 3, 4h, 4w)
        images = images.unflatten(0, (len(seeds), average)).float().mean(1).to(images.dtype)  # (B, 3, 4h, 4w)
        if (low[:, :1] == low).all():   # a grey input gives a grey output, not the autoencoder's tints
            images = images.mean(1, keepdim=True).expand_as(images)
        # 5. back-project onto the input
        images = back_project(images, low.expand(len(seeds), -1, -1, -1), back_projection)
        return PipelineOutput(to_pil(images), seeds, scheduler=name)
