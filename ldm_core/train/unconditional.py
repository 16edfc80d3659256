"""Unconditional latent diffusion (paper §4.2): Shapes World scenes, no conditioning.

A `UNet2DModel` (self-attention at the two lower resolutions) denoises the 16x16x4 latents of the
shared autoencoder; the training scenes are text2img's (scenes 0..n-1 of `sample_scene`, 1-3
objects, the same latent cache format), their captions unused. Loss, EMA, budget, resume and
checkpoints are `diffusion.py`'s; the export (`class_models.export_folder`) is read by
`UnconditionalPipeline`.

    python -m ldm_core.train unconditional --out runs/uncond --export models/shapes-uncond
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from diffusers import UNet2DModel

from ..data.detector import detect
from .class_models import build_unet2d, fit_model, sample_images
from .diffusion import EVAL_SEED0, Batch, DiffusionConfig, Stage, Weights
from .latents import Latents, load_latents
from .loop import start

PIPELINE = "UnconditionalPipeline"


@dataclass
class UnconditionalConfig(DiffusionConfig):
    out: str = "runs/uncond"
    steps: int = 100000
    lr: float = 5e-4
    num_scenes: int = 20000
    channels: tuple[int, ...] = (64, 128, 128)
    eval_samples: int = 32             # samples drawn at every evaluation
    eval_steps: int = 25               # sampling steps of those evaluation samples
    sample_minutes: float = 10.0


def make_batch(data: Latents, idx: torch.Tensor, gen: torch.Generator, rng) -> Batch:
    return Batch(x0=data.latents[idx.to(data.device)])


def evaluate(cfg: UnconditionalConfig, w: Weights, scenes) -> tuple[dict, np.ndarray]:
    """Objects the detector finds per sample, and the share of samples with 1-3 objects found."""
    images = sample_images(w.vae, w.unet, w.scheduler.config, [EVAL_SEED0 + i for i in range(cfg.eval_samples)],
                           steps=cfg.eval_steps)
    found = [len(detect(im)) for im in images]
    return {"objects_per_image": float(np.mean(found)),
            "share_1_to_3": float(np.mean([1 <= n <= 3 for n in found]))}, images


def train(cfg: UnconditionalConfig) -> None:
    acc, out = start(cfg)
    data = load_latents(cfg, acc.device, out)
    if cfg.init_from:     # continue from an exported model (its architecture, not --channels)
        unet = UNet2DModel.from_pretrained(Path(cfg.init_from) / "unet").float()
    else:
        unet = build_unet2d(cfg.channels, cfg.layers_per_block, cfg.head_dim, data.channels)
    fit_model(cfg, acc, out, data, Stage(pipeline=PIPELINE, unet=unet, batch=partial(make_batch, data),
                                         evaluate=partial(evaluate, cfg)))
