"""4x super-resolution (paper §4.4): the noisy latents and the 16x16 low-resolution image in; no text.

The UNet (diffusers `UNet2DModel`, attention only at the two low resolutions) reads
[latents (C) | low-resolution RGB (3)], with `--bicubic-latent` also the latent of the bicubic
upsampling (C), as `SuperResPipeline` feeds it. Low-resolution inputs are degraded scenes
(`ldm_core.data.degrade`: bicubic, with blur and noise each at `--degrade-p`); with
`--photo-fraction` that share of each batch is natural-photo crops instead.

    python -m ldm_core.train superres --out runs/superres --latent-cache runs/text2img/latents.safetensors \
        --export models/shapes-superres
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from diffusers import UNet2DModel
from PIL import Image

from ..data.degrade import degrade
from ..data.images import from_uint8, psnr
from ..data.photos import heldout_crops, random_crops
from ..data.shapes import sample_scene
from ..options import DDIM
from ..pipelines.common import encode_latents
from ..pipelines.superres import SuperResPipeline, bicubic_latent
from .diffusion import EVAL_SEED0, Batch, DiffusionConfig, Stage, Weights, fit
from .latents import Latents, load_latents
from .loop import start
from .models import fit_input


@dataclass
class SuperResConfig(DiffusionConfig):
    out: str = "runs/superres"
    photo_fraction: float = 0.0        # share of each batch that is natural-photo crops
    photo_rotate: bool = False         # photo crops also turned by multiples of 90 degrees
    degrade_p: float = 0.5             # probability of the blur, and of the noise, in a degradation
    bicubic_latent: bool = False       # the UNet also reads the latent of the bicubic upsampling


def build_unet(cfg: SuperResConfig, in_channels: int, out_channels: int = 4) -> UNet2DModel:
    """Text-free UNet: attention only at the two low resolutions."""
    n = len(cfg.channels)
    return UNet2DModel(sample_size=16, in_channels=in_channels, out_channels=out_channels,
                       block_out_channels=tuple(cfg.channels), layers_per_block=cfg.layers_per_block,
                       down_block_types=("DownBlock2D",) + ("AttnDownBlock2D",) * (n - 1),
                       up_block_types=("AttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
                       attention_head_dim=cfg.head_dim, norm_num_groups=32)


# ------------------------------------------------------------------ batches

def degraded_scenes(idx: list[int], rng: random.Random, p: float) -> torch.Tensor:
    """(B, 3, 16, 16) degraded low-resolution images of scenes `idx`, in [-1, 1]."""
    return from_uint8(np.stack([degrade(sample_scene(i).image, rng, p=p) for i in idx]))


@torch.no_grad()
def photo_examples(vae, k: int, rng: random.Random, device, degrade_p: float = 0.5,
                   rotate: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Examples from natural-photo crops: (k, C, 16, 16) target latents and (k, 3, 16, 16)
    degraded low-resolution images."""
    crops = random_crops(k, np.random.default_rng(rng.randrange(2 ** 31)), rotate=rotate)  # (k, 64, 64, 3)
    z = encode_latents(vae, from_uint8(crops).to(device))
    return z, from_uint8(np.stack([degrade(c, rng, p=degrade_p) for c in crops])).to(device)


def make_batch(cfg: SuperResConfig, data: Latents, idx: torch.Tensor, gen: torch.Generator,
               rng: random.Random) -> Batch:
    """Scenes `idx`, their first `photo_fraction` replaced by photo crops; the low-resolution
    images (and with `bicubic_latent` the latents of their bicubic upsampling) concatenated."""
    x0 = data.latents[idx.to(data.device)]  # (B, C, 16, 16)
    if cfg.photo_fraction > 0:
        k = round(len(idx) * cfg.photo_fraction)
        z, low_p = photo_examples(data.vae, k, rng, data.device, cfg.degrade_p, cfg.photo_rotate)
        x0 = torch.cat([z, x0[k:]])
        low = torch.cat([low_p, degraded_scenes(idx[k:].tolist(), rng, cfg.degrade_p).to(data.device)])
    else:
        low = degraded_scenes(idx.tolist(), rng, cfg.degrade_p).to(data.device)
    if cfg.bicubic_latent:
        with torch.no_grad():
            low = torch.cat([low, bicubic_latent(data.vae, low)], 1)  # (B, 3 + C, 16, 16)
    return Batch(x0=x0, extra=low)


# ------------------------------------------------------------------ evaluation

def _upscale(pipe: SuperResPipeline, lows: list[np.ndarray], steps: int) -> np.ndarray:
    return np.stack([np.asarray(pipe(image=Image.fromarray(lo), num_inference_steps=steps, seeds=[EVAL_SEED0 + i],
                                     sampler=DDIM, back_projection=5, average=1).images[0])
                     for i, lo in enumerate(lows)])


def _bicubic(lows: list[np.ndarray]) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(lo).resize((64, 64), Image.BICUBIC)) for lo in lows])


@torch.no_grad()
def measure_superres(pipe: SuperResPipeline, scenes, steps: int = 25, photos: bool = False) -> tuple[dict, np.ndarray]:
    """PSNR of 4x super-resolution of bicubic-downsampled held-out scenes (and, with `photos`,
    held-out photo crops), against bicubic upsampling."""
    gt = np.stack([s.image for s in scenes])
    low = [degrade(im, random.Random(i), bicubic_only=True) for i, im in enumerate(gt)]
    sr = _upscale(pipe, low, steps)
    metrics = {"sr_psnr": psnr(gt, sr), "bicubic_psnr": psnr(gt, _bicubic(low))}
    if photos:
        crops = heldout_crops(16)
        low = [degrade(c, random.Random(i), bicubic_only=True) for i, c in enumerate(crops)]
        sr_p = _upscale(pipe, low, steps)
        metrics.update(sr_photo_psnr=psnr(crops, sr_p), bicubic_photo_psnr=psnr(crops, _bicubic(low)))
        sr = np.concatenate([sr, sr_p])
    return metrics, sr


def evaluate(cfg: SuperResConfig, w: Weights, scenes) -> tuple[dict, np.ndarray]:
    pipe = SuperResPipeline(vae=w.vae, unet=w.unet, scheduler=w.scheduler)
    return measure_superres(pipe, scenes, photos=cfg.photo_fraction > 0)


# ------------------------------------------------------------------ training

def train(cfg: SuperResConfig) -> None:
    acc, out = start(cfg)
    data = load_latents(cfg, acc.device, out)
    in_ch = SuperResPipeline.unet_in_channels(data.channels, bicubic_latent=cfg.bicubic_latent)
    if cfg.init_from:   # e.g. --bicubic-latent on a model without: its new channels start at zero
        unet = UNet2DModel.from_pretrained(Path(cfg.init_from) / "unet").float()
        unet = fit_input(unet, in_ch, cfg.init_from, hint="is --bicubic-latent missing?")
    else:
        unet = build_unet(cfg, in_ch, data.channels)
    fit(cfg, acc, out, data, Stage(pipeline=SuperResPipeline, unet=unet, batch=partial(make_batch, cfg, data),
                                   evaluate=partial(evaluate, cfg)))
