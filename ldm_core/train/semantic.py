"""Semantic synthesis (paper §4.3.2, as semantic_synthesis256): a label map -> a Shapes World scene.

The map (`data/label_maps.py`: 0 background, 1 + k object kind k) goes one-hot through a
`SpatialRescaler` (two bilinear halvings, 64² -> the 16² latent grid, then a learned 1x1 conv to
`map_channels` channels, trained jointly, as the paper's `cond_stage_trainable`), concatenated to
the noisy latent. The UNet starts from the built-in unconditional model (`init_from`), its input
convolution widened by zero weights for the map channels: at step 0 it is the unconditional model,
and training teaches it to follow the map. Both are linear, so the 1x1 conv is applied after the
fixed halvings here (`SemanticUNet`), which equals the rescaler's order exactly.

Scenes are the unconditional run's (scenes 0..n-1, its latent cache reusable with --latent-cache);
each scene's map is rendered from its objects. Loss, EMA, budget, resume and checkpoints are
`diffusion.py`'s; the export is read by `SemanticPipeline`.

    python -m ldm_core.train semantic --out runs/semantic --export models/shapes-semantic
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from diffusers import UNet2DModel

from ..data.label_maps import PALETTE_RGB, SEMANTIC_CLASSES, label_map
from ..data.shapes import ShapeObject
from ..eval.semantic import eval_maps, region_scores
from ..pipelines.common import denoise, make_generators, make_scheduler, per_image_noise
from ..pipelines.latents import decode_latents, latent_shape
from ..pipelines.spatial_rescaler import SpatialRescaler
from ..data.images import to_uint8
from .class_models import _Run
from .common import ensure_dir, save_json
from .diffusion import EVAL_SEED0, Batch, DiffusionConfig, Stage, Weights, fit
from .latents import Latents, load_latents
from .loop import start

PIPELINE = "SemanticPipeline"


@dataclass
class SemanticConfig(DiffusionConfig):
    out: str = "runs/semantic"
    steps: int = 100000
    lr: float = 2e-4
    num_scenes: int = 20000
    init_from: str = "models/shapes-uncond"   # an exported unconditional (or semantic) folder
    map_channels: int = 3                      # the rescaler's output channels (the paper's 3)
    eval_maps: int = 32
    eval_steps: int = 25
    sample_minutes: float = 10.0


class SemanticUNet(torch.nn.Module):
    """UNet + rescaler as one trained module: input (B, latent + classes, h, w) with the one-hot
    map already halved to the latent grid; the rescaler's 1x1 conv maps it, then the UNet."""

    def __init__(self, unet: UNet2DModel, rescaler: SpatialRescaler, latent_channels: int):
        super().__init__()
        self.unet, self.rescaler, self.latent_channels = unet, rescaler, latent_channels
        self.config = SimpleNamespace(in_channels=latent_channels + rescaler.n_classes)

    def forward(self, x: torch.Tensor, t, **kw):
        z, m = x[:, : self.latent_channels], x[:, self.latent_channels:]
        return self.unet(torch.cat([z, self.rescaler.channel_mapper(m)], 1), t, **kw)


def scene_objects(meta: dict) -> list[ShapeObject]:
    """A cached scene's objects from its boxes (normalised, exact multiples of 1/64)."""
    out = []
    for b in meta["boxes"]:
        x0, y0, x1, _ = (round(v * 64) for v in b["box"])
        color, shape = b["label"].split()
        out.append(ShapeObject(color, shape, x0, y0, x1 - x0))
    return out


def halved_one_hot(rescaler: SpatialRescaler, labels: torch.Tensor) -> torch.Tensor:
    """(B, H, W) labels -> the one-hot map after the rescaler's halvings (before its conv)."""
    x = rescaler.one_hot(labels)
    for _ in range(rescaler.config.n_stages):
        x = torch.nn.functional.interpolate(x, scale_factor=rescaler.config.multiplier,
                                            mode=rescaler.config.method, align_corners=False)
    return x


def make_batch(maps: torch.Tensor, rescaler: SpatialRescaler, data: Latents, idx: torch.Tensor, gen, rng) -> Batch:
    return Batch(x0=data.latents[idx.to(data.device)], extra=halved_one_hot(rescaler, maps[idx]).to(data.device))


@torch.no_grad()
def sample(vae, net: SemanticUNet, scheduler_config, labels: np.ndarray, seeds: list[int], steps: int = 25,
           batch: int = 16) -> np.ndarray:
    """Images (N, H, W, 3) uint8 for label maps (N, H, W), image i from seeds[i]."""
    out = []
    for i in range(0, len(seeds), batch):
        lab = torch.as_tensor(labels[i:i + batch]).long()
        m = halved_one_hot(net.rescaler, lab)
        sched = make_scheduler(scheduler_config, "DPM++ 2M")
        sched.set_timesteps(steps)
        gens = make_generators(list(seeds[i:i + batch]))
        x = per_image_noise(latent_shape(vae, len(lab), lab.shape[1], lab.shape[2]), gens, "cpu", torch.float32)
        z = denoise(lambda z, t: net(torch.cat([z, m], 1), t).sample, sched, x * sched.init_noise_sigma,
                    sched.timesteps, 1.0, gens, None)
        out.append(to_uint8(decode_latents(vae, z)))
    return np.concatenate(out)


def evaluate(cfg: SemanticConfig, w: Weights, scenes) -> tuple[dict, np.ndarray]:
    maps = eval_maps(cfg.eval_maps, 64, EVAL_SEED0)
    images = sample(w.vae, w.unet, w.scheduler.config, np.stack([m[2] for m in maps]),
                    [EVAL_SEED0 + i for i in range(len(maps))], cfg.eval_steps)
    r = region_scores(images, maps)
    return {"region_agreement": r["region_agreement"], "precision": r["precision"]}, images


def widened(unet: UNet2DModel, extra: int) -> UNet2DModel:
    """`unet` with `extra` more input channels, their weights zero (the same function at first)."""
    cfg = dict(unet.config)
    cfg["in_channels"] = unet.config.in_channels + extra
    new = UNet2DModel.from_config(cfg)
    sd = unet.state_dict()
    w = sd["conv_in.weight"]
    sd["conv_in.weight"] = torch.cat([w, torch.zeros(w.shape[0], extra, *w.shape[2:], dtype=w.dtype)], 1)
    new.load_state_dict(sd)
    return new


def networks(cfg: SemanticConfig, latent_channels: int) -> SemanticUNet:
    src = Path(cfg.init_from)
    unet = UNet2DModel.from_pretrained(src / "unet").float()
    if (src / "rescaler").is_dir():         # continue a semantic model
        return SemanticUNet(unet, SpatialRescaler.from_pretrained(src / "rescaler").float(), latent_channels)
    rescaler = SpatialRescaler(n_stages=2, method="bilinear", multiplier=0.5, in_channels=len(SEMANTIC_CLASSES),
                               out_channels=cfg.map_channels, class_names=list(SEMANTIC_CLASSES), palette=PALETTE_RGB)
    return SemanticUNet(widened(unet, cfg.map_channels), rescaler, latent_channels)


class _SemanticRun(_Run):
    def export(self, dest: Path) -> None:
        if not self.acc.is_main_process:
            return
        w = self.weights()
        dest = ensure_dir(dest)
        copy.deepcopy(w.unet.unet).half().save_pretrained(dest / "unet", safe_serialization=True)
        copy.deepcopy(w.unet.rescaler).half().save_pretrained(dest / "rescaler", safe_serialization=True)
        w.scheduler.save_pretrained(dest / "scheduler")
        save_json(dest / "model_index.json", {
            "_class_name": PIPELINE, "vae": ["diffusers", "AutoencoderKL"], "unet": ["diffusers", "UNet2DModel"],
            "rescaler": ["ldm_core", "SpatialRescaler"], "scheduler": ["diffusers", "DDPMScheduler"],
            "_shared": {"vae": Path(self.cfg.autoencoder).name}})


def train(cfg: SemanticConfig) -> None:
    acc, out = start(cfg)
    data = load_latents(cfg, acc.device, out)
    maps = torch.from_numpy(np.stack([label_map(scene_objects(m)) for m in data.meta]))   # (N, 64, 64) uint8
    net = networks(cfg, data.channels)
    stage = Stage(pipeline=PIPELINE, unet=net, batch=partial(make_batch, maps, net.rescaler, data),
                  evaluate=partial(evaluate, cfg))
    fit(cfg, acc, out, data, stage, run_class=_SemanticRun)
