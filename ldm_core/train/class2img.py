"""Class-conditional latent diffusion (paper §4.1, as the cin256 models): object kind -> image.

The classes are Shapes World's 24 object kinds "<colour> <shape>", colours in `PALETTE` order and,
within a colour, shapes in `SHAPES` order (0 "red circle", 1 "red square", ..., 23 "magenta
diamond"); index 24 is the null class, trained by dropping the label `label_dropout` of the time so
classifier-free guidance works (cin256-v2's 1000-of-1001). A class index goes through the
`ClassEmbedder` (one context token, (B, 1, D)) into the UNet's cross-attention
(`encoder_hidden_states`); the embedder is trained jointly with the UNet.

A class's training scene (`class_scene`): a 64x64 white canvas with 1-3 objects (equally often),
all of that class, sizes and positions drawn as Shapes World draws them (12-28 px, boxes 2 px
apart). Loss, EMA, budget, resume and checkpoints are `diffusion.py`'s; the export
(`class_models.export_folder`) is read by `ClassConditionalPipeline`.

    python -m ldm_core.train class2img --out runs/class2img --export models/shapes-class2img
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from diffusers import UNet2DConditionModel

from ..data.object_kinds import CLASS_NAMES, NULL_CLASS, class_scene
from ..data.shapes import Scene
from ..eval.classes import class_accuracy
from ..pipelines.class_embedder import ClassEmbedder
from .class_models import EmbedderAsEncoder, build_cache, fit_model, load_vae, sample_images
from .diffusion import EVAL_SEED0, Batch, DiffusionConfig, Stage, Weights
from .latents import Latents
from .loop import start
from .models import build_unet

PIPELINE = "ClassConditionalPipeline"
CLASS_SEED0 = 30_000_000     # training scene k: seed CLASS_SEED0 + k, class k % 24


def training_scene(k: int) -> Scene:
    return class_scene(CLASS_SEED0 + k, k % len(CLASS_NAMES))


@dataclass
class Class2ImgConfig(DiffusionConfig):
    out: str = "runs/class2img"
    steps: int = 100000
    lr: float = 5e-4
    num_scenes: int = 12000            # cached training scenes, the classes in turn (500 each)
    channels: tuple[int, ...] = (64, 96, 128)
    embed_dim: int = 128               # the class token's width (the UNet's cross_attention_dim)
    label_dropout: float = 0.1         # share of examples trained as the null class
    eval_guidance: float = 3.0
    eval_seeds: int = 2                # samples per class at every evaluation
    eval_steps: int = 25               # sampling steps of those evaluation samples
    sample_minutes: float = 10.0


def load_class_latents(cfg: Class2ImgConfig, device, out: Path) -> Latents:
    vae = load_vae(cfg.autoencoder, device)

    def render(k: int):
        s = training_scene(k)
        return s.image, {"label": k % len(CLASS_NAMES), "caption": s.caption, "boxes": s.boxes, "form": s.form}

    latents, meta = build_cache(vae, cfg.num_scenes, Path(cfg.latent_cache or out / "latents.safetensors"), render)
    return Latents(vae, latents.to(device), meta)


def make_batch(cfg: Class2ImgConfig, data: Latents, labels: torch.Tensor, idx: torch.Tensor,
               gen: torch.Generator, rng) -> Batch:
    """Scenes `idx`: their latents and class labels, the null class at `label_dropout`."""
    y = labels[idx]
    y = torch.where(torch.rand(len(idx), generator=gen) < cfg.label_dropout, NULL_CLASS, y)
    return Batch(x0=data.latents[idx.to(data.device)], ids=y.to(data.device))


def evaluate(cfg: Class2ImgConfig, w: Weights, scenes) -> tuple[dict, np.ndarray]:
    """Every class `eval_seeds` times, guided: the share whose detected objects are all of the class."""
    labels = [c for _ in range(cfg.eval_seeds) for c in range(len(CLASS_NAMES))]
    seeds = [EVAL_SEED0 + i for i in range(len(labels))]
    images = sample_images(w.vae, w.unet, w.scheduler.config, seeds, labels, w.text_encoder.embedder,
                           cfg.eval_guidance, cfg.eval_steps)
    r = class_accuracy(images, labels)
    return {"class_acc": r["accuracy"], "objects_per_image": r["objects_per_image"]}, images


def networks(cfg: Class2ImgConfig, latent_channels: int) -> tuple:
    """The UNet and class embedder: new, or (`init_from`) an exported model's, in float32."""
    if cfg.init_from:
        return (UNet2DConditionModel.from_pretrained(Path(cfg.init_from) / "unet").float(),
                ClassEmbedder.from_pretrained(Path(cfg.init_from) / "class_embedder").float())
    unet = build_unet(SimpleNamespace(channels=cfg.channels, layers_per_block=cfg.layers_per_block,
                                      head_dim=cfg.head_dim, text_hidden=cfg.embed_dim),
                      latent_channels, latent_channels)
    embedder = ClassEmbedder(n_classes=NULL_CLASS + 1, embed_dim=cfg.embed_dim, class_names=list(CLASS_NAMES),
                             null_class=NULL_CLASS)
    return unet, embedder


def train(cfg: Class2ImgConfig) -> None:
    acc, out = start(cfg)
    data = load_class_latents(cfg, acc.device, out)
    labels = torch.tensor([m["label"] for m in data.meta])
    unet, embedder = networks(cfg, data.channels)
    fit_model(cfg, acc, out, data, Stage(pipeline=PIPELINE, unet=unet, text_encoder=EmbedderAsEncoder(embedder),
                                         batch=partial(make_batch, cfg, data, labels),
                                         evaluate=partial(evaluate, cfg)))
