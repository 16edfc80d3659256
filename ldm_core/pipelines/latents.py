"""The latent space: channels and downsampling of an autoencoder, (de)normalisation, encode and
decode within the memory there is, coordinate maps, padding to the sides the models take, and
conversions to and from PIL."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from diffusers import AutoencoderKL, VQModel
from PIL import Image

from ..device import available_memory


# ---------------------------------------------------------------- latent space
def latent_channels(vae) -> int:
    if isinstance(vae, AutoencoderKL):
        return vae.config.latent_channels
    return vae.config.vq_embed_dim or vae.config.latent_channels


COORD_CHANNELS = 2  # optional (x, y) position maps after a UNet's other inputs (CoordConv)


def coord_maps(like: torch.Tensor) -> torch.Tensor:
    """(B, 2, h, w) maps of x and y in [-1, 1], shaped like `like` (B, C, h, w).

    A UNet built with two more input channels than its task needs reads these: they tell each
    position where it is, which box tokens ("<loc7>") and relations ("left of") need."""
    b, _, h, w = like.shape
    ys = torch.linspace(-1, 1, h, device=like.device, dtype=like.dtype)
    xs = torch.linspace(-1, 1, w, device=like.device, dtype=like.dtype)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"))  # (2, h, w): x then y
    return grid[None].expand(b, -1, -1, -1)


def with_coords(x: torch.Tensor, unet_in_channels: int) -> torch.Tensor:
    """Append the coordinate maps when the UNet takes them (its input is 2 channels wider than x)."""
    extra = unet_in_channels - x.shape[1]
    if extra == 0:
        return x
    if extra != COORD_CHANNELS:
        raise ValueError(f"the UNet takes {unet_in_channels} input channels; this task gives {x.shape[1]} "
                         f"(or {x.shape[1] + COORD_CHANNELS} with coordinate maps)")
    return torch.cat([x, coord_maps(x)], 1)


def vae_scale_factor(vae) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


def latent_shape(vae, n: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(B, C, h, w): n images of height x width in the autoencoder's latent space."""
    f = vae_scale_factor(vae)
    return (n, latent_channels(vae), height // f, width // f)


MIN_PAD_MULTIPLE = 8   # an input image's sides are padded to multiples of this (and of the autoencoder's factor)


def pad_multiple(vae) -> int:
    """The multiple an input image's sides are padded to before it is encoded."""
    return max(MIN_PAD_MULTIPLE, vae_scale_factor(vae))


def pad_edges(image, multiple: int):
    """A PIL image padded on the right and bottom, edge pixels repeated, to sides that are
    multiples of `multiple` (the image itself when they already are)."""
    w, h = image.size
    if not (-w % multiple or -h % multiple):
        return image
    a = np.asarray(image)
    pad = ((0, -h % multiple), (0, -w % multiple)) + ((0, 0),) * (a.ndim - 2)
    return Image.fromarray(np.pad(a, pad, mode="edge"))


def _stats(vae, like: torch.Tensor):
    mean = getattr(vae.config, "latents_mean", None)
    std = getattr(vae.config, "latents_std", None)
    if mean is None or std is None:
        return None
    shape = (1, len(mean), 1, 1)
    return (torch.tensor(mean, device=like.device, dtype=like.dtype).view(shape),
            torch.tensor(std, device=like.device, dtype=like.dtype).view(shape))


# ---------------------------------------------------------------- autoencoder memory
# A whole encode/decode holds about 8 activations of the full-resolution width per image
# (measured: docs/benchmarks.md). Autoencoders the stack marks `auto_memory` run the whole batch
# at once while that fits in VAE_MEMORY_SHARE of the free memory (the fastest), one image at a
# time when only that fits, and in tiles when not even that does.
VAE_MEMORY_SHARE = 0.5


def vae_working_bytes(vae, height: int, width: int) -> int:
    """Estimated peak extra memory of a whole encode/decode of one height x width image."""
    return height * width * vae.config.block_out_channels[0] * next(vae.parameters()).element_size() * 8


@contextmanager
def vae_memory_plan(vae, batch: int, height: int, width: int):
    """Whole batch, one image at a time (slicing) or tiles: the fastest that fits in memory."""
    if not getattr(vae, "auto_memory", False):
        yield
        return
    free = available_memory(next(vae.parameters()).device)
    one = vae_working_bytes(vae, height, width)
    budget = VAE_MEMORY_SHARE * free if free is not None else float("inf")
    vae.use_slicing = batch > 1 and batch * one > budget
    vae.use_tiling = one > budget
    try:
        yield
    finally:
        vae.use_slicing = vae.use_tiling = False


def encode_latents(vae, images: torch.Tensor, generator=None, sample: bool = False) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1] -> normalised latents (B, C, H/f, W/f)."""
    if isinstance(vae, VQModel):
        return vae.encode(images).latents
    with vae_memory_plan(vae, images.shape[0], images.shape[-2], images.shape[-1]):
        dist = vae.encode(images).latent_dist
    z = dist.sample(generator) if sample else dist.mode()
    stats = _stats(vae, z)
    if stats is not None:
        return (z - stats[0]) * vae.config.scaling_factor / stats[1]
    return z * vae.config.scaling_factor


def decode_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents -> images (B, 3, H, W) in [-1, 1]."""
    if isinstance(vae, VQModel):
        return vae.decode(latents).sample
    stats = _stats(vae, latents)
    if stats is not None:
        z = latents * stats[1] / vae.config.scaling_factor + stats[0]
    else:
        z = latents / vae.config.scaling_factor
    f = vae_scale_factor(vae)
    with vae_memory_plan(vae, z.shape[0], z.shape[-2] * f, z.shape[-1] * f):
        return vae.decode(z).sample


def pil_to_tensor(img) -> torch.Tensor:
    """PIL image -> (1, 3, H, W) in [-1, 1]."""
    a = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 127.5 - 1.0)
    return a.permute(2, 0, 1)[None]


def to_pil(images: torch.Tensor):
    """(B, 3, H, W) in [-1, 1] -> list of PIL RGB images."""
    arr = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def latent_preview(latents: torch.Tensor):
    """A false-colour look at latents (B, C, h, w): first 3 channels, rescaled. The live previews'
    last fallback, for an autoencoder without a latent -> RGB map (ldm_core/latent_rgb.py)."""
    x = latents[:, :3].float()
    if x.shape[1] < 3:
        x = x[:, :1].expand(-1, 3, -1, -1)
    lo, hi = x.amin((1, 2, 3), keepdim=True), x.amax((1, 2, 3), keepdim=True)
    arr = ((x - lo) / (hi - lo + 1e-6) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]
