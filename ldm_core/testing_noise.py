"""Tiny random models of the tasks that sample from noise (unconditional, class -> image), in the
built-in folder layout: the shared tiny autoencoder that `testing.write_builtin_like` writes, a
UNet2DModel or a cross-attention UNet with the ClassEmbedder of the paper's cin256 models."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel, UNet2DModel

from .data.shapes import COLORS, SHAPES
from .pipelines.class_embedder import ClassEmbedder

DDPM = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


def _index(folder: Path, cls_name: str, unet: str, extra: dict | None = None) -> None:
    index = {"_class_name": cls_name, "vae": ["diffusers", "AutoencoderKL"], "unet": ["diffusers", unet],
             **(extra or {}), "scheduler": ["diffusers", "DDPMScheduler"], "_shared": {"vae": "tiny-autoencoder"}}
    (folder / "model_index.json").write_text(json.dumps(index, indent=1))


def write_noise_like(root: Path) -> dict[str, Path]:
    """tiny-uncond and tiny-class2img (24 Shapes World classes and a null class) beside the other tiny models."""
    paths = {}
    d = root / "tiny-uncond"
    torch.manual_seed(0)
    UNet2DModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                layers_per_block=1, norm_num_groups=8, attention_head_dim=8).save_pretrained(d / "unet")
    DDPMScheduler(**DDPM).save_pretrained(d / "scheduler")
    _index(d, "UnconditionalPipeline", "UNet2DModel")
    paths["tiny-uncond"] = d
    d = root / "tiny-class2img"
    torch.manual_seed(0)
    UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 32),
                         down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                         up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), layers_per_block=1,
                         cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8).save_pretrained(d / "unet")
    names = [f"{c} {s}" for c in COLORS for s in SHAPES]
    ClassEmbedder(len(names) + 1, 32, names, null_class=len(names)).save_pretrained(d / "class_embedder")
    DDPMScheduler(**DDPM).save_pretrained(d / "scheduler")
    _index(d, "ClassConditionalPipeline", "UNet2DConditionModel",
           {"class_embedder": ["ldm_core", "ClassEmbedder"]})
    paths["tiny-class2img"] = d
    return paths


NOISE_CATALOG = """
[[model]]
name = "tiny-uncond"
task = "unconditional"
source = "tiny-uncond"
pipeline = "UnconditionalPipeline"
width = 32
height = 32
steps = 4
sampler = "DDIM"
guidance = 1.0
guided = false
default = true

[[model]]
name = "tiny-class2img"
task = "class2img"
source = "tiny-class2img"
pipeline = "ClassConditionalPipeline"
width = 32
height = 32
steps = 4
sampler = "DDIM"
guidance = 3.0
classes = "shapes-world"
default = true

"""
