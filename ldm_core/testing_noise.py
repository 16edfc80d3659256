"""Tiny random models of the tasks that sample from noise (unconditional, class -> image, label
map -> image), in the built-in folder layout: the shared tiny autoencoder that
`testing.write_builtin_like` writes, a UNet2DModel, a cross-attention UNet with the ClassEmbedder of
the paper's cin256 models, or a UNet2DModel taking the SpatialRescaler's map channels; and the paper's
layout model (boxes as tokens through LDMBert) in its converted folder layout."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel, UNet2DModel, VQModel
from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel

from .data.label_maps import PALETTE_RGB, SEMANTIC_CLASSES
from .data.shapes import COLORS, SHAPES
from .pipelines.class_embedder import ClassEmbedder
from .pipelines.spatial_rescaler import SpatialRescaler

DDPM = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


def _index(folder: Path, cls_name: str, unet: str, extra: dict | None = None) -> None:
    index = {"_class_name": cls_name, "vae": ["diffusers", "AutoencoderKL"], "unet": ["diffusers", unet],
             **(extra or {}), "scheduler": ["diffusers", "DDPMScheduler"], "_shared": {"vae": "tiny-autoencoder"}}
    (folder / "model_index.json").write_text(json.dumps(index, indent=1))


def _tiny_unet2d(in_channels: int) -> UNet2DModel:
    """The tiny unconditional UNet (4 latent channels out), taking `in_channels` in."""
    return UNet2DModel(sample_size=8, in_channels=in_channels, out_channels=4, block_out_channels=(16, 32),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), layers_per_block=1, norm_num_groups=8,
                       attention_head_dim=8)


def write_noise_like(root: Path) -> dict[str, Path]:
    """tiny-uncond and tiny-class2img (24 Shapes World classes and a null class) beside the other tiny models."""
    paths = {}
    d = root / "tiny-uncond"
    torch.manual_seed(0)
    _tiny_unet2d(4).save_pretrained(d / "unet")
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
    paths["tiny-paper-layout"] = write_paper_layout_like(root / "tiny-paper-layout")
    paths["tiny-semantic"] = _write_semantic(root / "tiny-semantic")
    return paths


def _write_semantic(d: Path) -> Path:
    """The built-in semantic model's layout: 25 Shapes World labels -> 3 channels, 4x smaller (f=4)."""
    torch.manual_seed(0)
    _tiny_unet2d(4 + 3).save_pretrained(d / "unet")
    SpatialRescaler(n_stages=2, in_channels=len(SEMANTIC_CLASSES), out_channels=3, class_names=list(SEMANTIC_CLASSES),
                    palette=PALETTE_RGB).save_pretrained(d / "rescaler")
    DDPMScheduler(**DDPM).save_pretrained(d / "scheduler")
    _index(d, "SemanticPipeline", "UNet2DModel", {"rescaler": ["ldm_core", "SpatialRescaler"]})
    return d


def write_paper_layout_like(d: Path) -> Path:
    """The converted layout2img-openimages256's layout, tiny: VQModel f=4 (3 latent channels), LDMBertModel
    over the layout's 8192 token ids at 92 positions, a 3-level cross-attention UNet (sides: multiples of 16)."""
    torch.manual_seed(0)
    VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 16), layers_per_block=1,
            latent_channels=3, num_vq_embeddings=64, vq_embed_dim=3, norm_num_groups=8,
            scaling_factor=1.0).save_pretrained(d / "vae")
    LDMBertModel(LDMBertConfig(vocab_size=8192, max_position_embeddings=92, encoder_layers=1, encoder_ffn_dim=32,
                               encoder_attention_heads=2, head_dim=16, d_model=32)).save_pretrained(d / "text_encoder")
    UNet2DConditionModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(16, 16, 32),
                         down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                         up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), layers_per_block=1,
                         cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8).save_pretrained(d / "unet")
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.0205,
                  clip_sample=False).save_pretrained(d / "scheduler")
    index = {"_class_name": "PaperLayoutPipeline", "vae": ["diffusers", "VQModel"],
             "text_encoder": ["latent_diffusion", "LDMBertModel"], "unet": ["diffusers", "UNet2DConditionModel"],
             "scheduler": ["diffusers", "DDIMScheduler"]}
    (d / "model_index.json").write_text(json.dumps(index, indent=1))
    return d


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

[[model]]
name = "tiny-semantic"
task = "semantic2img"
source = "tiny-semantic"
pipeline = "SemanticPipeline"
width = 32
height = 32
steps = 4
sampler = "DDIM"
guidance = 1.0
guided = false
default = true

[[model]]
name = "tiny-paper-layout"
task = "layout2img"
source = "tiny-paper-layout"
pipeline = "PaperLayoutPipeline"
width = 32
height = 32
steps = 4
sampler = "DDIM"
guidance = 1.0
guided = false

"""
