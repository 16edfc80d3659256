"""Tiny random-weight models, built offline, of every component class and config shape the
catalog's pipelines run: the built-in layouts and the hub checkpoints' layouts
(CompVis LDM text-to-image with LDMBert, CompVis LDM-SR with a VQModel, Stable Diffusion
inpainting with CLIP, GLIGEN with gated attention). Tests, benchmarks and a model-less
demo use them: `write_tiny_catalog(folder)` writes the folders and a catalog to load.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    PNDMScheduler,
    UNet2DConditionModel,
    UNet2DModel,
    VQModel,
)
from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel
from transformers import BertTokenizer, CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from .grounding import GROUNDING_CHANNELS
from .hub_mirror import clip_vocab
from .testing_noise import NOISE_CATALOG, write_noise_like
from .text import build_tokenizer


def _save_index(folder: Path, cls_name: str, components: dict, shared: dict | None = None) -> None:
    index = {"_class_name": cls_name, **components}
    if shared:
        index["_shared"] = shared
    (folder / "model_index.json").write_text(json.dumps(index, indent=1))


def tiny_vae(latent_channels: int = 4, stats: bool = True):
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 16), layers_per_block=1,
                        latent_channels=latent_channels, norm_num_groups=8, sample_size=32)
    if stats:
        vae.register_to_config(latents_mean=[0.0] * latent_channels, latents_std=[1.0] * latent_channels,
                               scaling_factor=1.0)
    return vae


def tiny_cond_unet(in_channels=4, cross_dim=32, attention_type="default", addition_text=False):
    torch.manual_seed(0)
    kw = dict(addition_embed_type="text", addition_embed_type_num_heads=2) if addition_text else {}
    return UNet2DConditionModel(sample_size=8, in_channels=in_channels, out_channels=4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), block_out_channels=(16, 32),
                                layers_per_block=1, cross_attention_dim=cross_dim, attention_head_dim=8,
                                norm_num_groups=8, attention_type=attention_type, **kw)


def tiny_clip_text(vocab_size: int, max_len: int, hidden: int = 32, pad=0, bos=2, eos=3):
    torch.manual_seed(0)
    return CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=64,
                                        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=max_len,
                                        pad_token_id=pad, bos_token_id=bos, eos_token_id=eos, projection_dim=hidden))


def ddpm_config() -> dict:
    return dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                prediction_type="epsilon", clip_sample=False)


def _clip_tokenizer(folder: Path, max_len: int):
    """A CLIP BPE tokenizer with a tiny byte-level vocabulary, written from scratch."""

    vocab = clip_vocab()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_len)
    tok.save_pretrained(folder)
    return tok


def write_builtin_like(root: Path) -> dict[str, Path]:
    """Tiny models with the built-in folder layout (shared autoencoder, own tokenizer)."""
    paths = {}
    vae_dir = root / "tiny-autoencoder"
    tiny_vae().save_pretrained(vae_dir, safe_serialization=True)
    (vae_dir / "model_index.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    for name, max_len, in_ch, cls_name in (("tiny-text2img", 24, 4, "Text2ImgPipeline"),
                                           ("tiny-layout2img", 24, 4 + GROUNDING_CHANNELS, "Layout2ImgPipeline"),
                                           ("tiny-inpaint", 24, 9, "InpaintPipeline")):
        d = root / name
        tok = build_tokenizer(max_len)
        tok.save_pretrained(d / "tokenizer")
        tiny_clip_text(len(tok), max_len, pad=tok.pad_token_id, bos=tok.bos_token_id,
                       eos=tok.eos_token_id).save_pretrained(d / "text_encoder", safe_serialization=True)
        tiny_cond_unet(in_ch, addition_text=True).save_pretrained(d / "unet", safe_serialization=True)
        DDPMScheduler(**ddpm_config()).save_pretrained(d / "scheduler")
        _save_index(d, cls_name, {"vae": ["diffusers", "AutoencoderKL"],
                                  "text_encoder": ["transformers", "CLIPTextModel"],
                                  "tokenizer": ["transformers", "PreTrainedTokenizerFast"],
                                  "unet": ["diffusers", "UNet2DConditionModel"],
                                  "scheduler": ["diffusers", "DDPMScheduler"]}, {"vae": "tiny-autoencoder"})
        paths[name] = d
    d = root / "tiny-superres"
    torch.manual_seed(0)
    UNet2DModel(sample_size=16, in_channels=7, out_channels=4, block_out_channels=(16, 32),
                down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                layers_per_block=1, norm_num_groups=8, attention_head_dim=8).save_pretrained(
        d / "unet", safe_serialization=True)
    DDPMScheduler(**ddpm_config()).save_pretrained(d / "scheduler")
    _save_index(d, "SuperResPipeline", {"vae": ["diffusers", "AutoencoderKL"], "unet": ["diffusers", "UNet2DModel"],
                                        "scheduler": ["diffusers", "DDPMScheduler"]}, {"vae": "tiny-autoencoder"})
    paths["tiny-superres"] = d
    return paths


def write_hub_like(root: Path) -> dict[str, Path]:
    """Tiny models with the hub checkpoints' own component names, classes and layouts."""
    paths = {}
    # CompVis/ldm-text2im-large-256: vqvae (AutoencoderKL, scaling 0.18215), bert (LDMBert), BertTokenizer
    d = root / "tiny-compvis-text2im"
    vae = tiny_vae(stats=False)
    vae.register_to_config(scaling_factor=0.18215)
    vae.save_pretrained(d / "vqvae", safe_serialization=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "red", "blue", "circle", "square", "and", "left", "of"]
    (d / "tokenizer").mkdir(parents=True)
    (d / "tokenizer" / "vocab.txt").write_text("\n".join(vocab))
    BertTokenizer(str(d / "tokenizer" / "vocab.txt"), model_max_length=16).save_pretrained(d / "tokenizer")
    torch.manual_seed(0)
    LDMBertModel(LDMBertConfig(vocab_size=len(vocab), max_position_embeddings=16, encoder_layers=1, encoder_ffn_dim=32,
                               encoder_attention_heads=2, head_dim=16, d_model=32)).save_pretrained(
        d / "bert", safe_serialization=True)
    tiny_cond_unet(4).save_pretrained(d / "unet", safe_serialization=True)
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                  clip_sample=False).save_pretrained(d / "scheduler")
    _save_index(d, "LDMTextToImagePipeline", {"vqvae": ["diffusers", "AutoencoderKL"],
                                              "bert": ["latent_diffusion", "LDMBertModel"],
                                              "tokenizer": ["transformers", "BertTokenizer"],
                                              "unet": ["diffusers", "UNet2DConditionModel"],
                                              "scheduler": ["diffusers", "DDIMScheduler"]})
    paths["tiny-compvis-text2im"] = d
    # CompVis/ldm-super-resolution-4x-openimages: VQModel (3 latent channels) + UNet2DModel(6 -> 3)
    d = root / "tiny-compvis-superres"
    torch.manual_seed(0)
    VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 16), layers_per_block=1,
            latent_channels=3, num_vq_embeddings=64, vq_embed_dim=3, norm_num_groups=8).save_pretrained(
        d / "vqvae", safe_serialization=True)
    UNet2DModel(sample_size=16, in_channels=6, out_channels=3, block_out_channels=(16, 32),
                down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                layers_per_block=1, norm_num_groups=8, attention_head_dim=8).save_pretrained(
        d / "unet", safe_serialization=True)
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.0155,
                  clip_sample=False).save_pretrained(d / "scheduler")
    _save_index(d, "LDMSuperResolutionPipeline", {"vqvae": ["diffusers", "VQModel"],
                                                  "unet": ["diffusers", "UNet2DModel"],
                                                  "scheduler": ["diffusers", "DDIMScheduler"]})
    paths["tiny-compvis-superres"] = d
    # Stable Diffusion inpainting / GLIGEN: AutoencoderKL + CLIP text + CLIPTokenizer (+ null safety checker)
    for name, in_ch, attn, cls_name in (("tiny-sd-inpaint", 9, "default", "StableDiffusionInpaintPipeline"),
                                        ("tiny-gligen", 4, "gated", "StableDiffusionGLIGENPipeline")):
        paths[name] = _write_sd_like(root / name, in_ch, attn, cls_name)
    return paths


def _write_sd_like(d: Path, in_ch: int, attn: str, cls_name: str) -> Path:
    """A Stable Diffusion layout (inpainting, GLIGEN): AutoencoderKL, CLIP text, CLIPTokenizer, PNDM."""
    vae = tiny_vae(stats=False)
    vae.register_to_config(scaling_factor=0.18215)
    vae.save_pretrained(d / "vae", safe_serialization=True)
    tok = _clip_tokenizer(d / "tokenizer", 16)
    tiny_clip_text(len(tok), 16, pad=tok.pad_token_id or 0, bos=tok.bos_token_id,
                   eos=tok.eos_token_id).save_pretrained(d / "text_encoder", safe_serialization=True)
    tiny_cond_unet(in_ch, attention_type=attn).save_pretrained(d / "unet", safe_serialization=True)
    PNDMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                  skip_prk_steps=True).save_pretrained(d / "scheduler")
    _save_index(d, cls_name, {"vae": ["diffusers", "AutoencoderKL"],
                              "text_encoder": ["transformers", "CLIPTextModel"],
                              "tokenizer": ["transformers", "CLIPTokenizer"],
                              "unet": ["diffusers", "UNet2DConditionModel"],
                              "scheduler": ["diffusers", "PNDMScheduler"],
                              "safety_checker": [None, None], "feature_extractor": [None, None]})
    return d


TINY_CATALOG = """
[[model]]
name = "tiny-img2img"
task = "img2img"
source = "tiny-text2img"
pipeline = "Img2ImgPipeline"
width = 32
height = 32
steps = 4
guidance = 3.0
default = true

[[model]]
name = "tiny-compvis-img2img"
task = "img2img"
source = "tiny-compvis-text2im"
pipeline = "Img2ImgPipeline"
width = 32
height = 32
steps = 4
guidance = 3.0

[[model]]
name = "tiny-text2img"
task = "text2img"
source = "tiny-text2img"
pipeline = "Text2ImgPipeline"
width = 32
height = 32
steps = 4
guidance = 3.0
default = true

[[model]]
name = "tiny-compvis-text2im"
task = "text2img"
source = "tiny-compvis-text2im"
pipeline = "Text2ImgPipeline"
width = 32
height = 32
steps = 4
sampler = "DDIM"

[[model]]
name = "tiny-layout2img"
task = "layout2img"
source = "tiny-layout2img"
pipeline = "Layout2ImgPipeline"
width = 32
height = 32
steps = 4
default = true

[[model]]
name = "tiny-gligen"
task = "layout2img"
source = "tiny-gligen"
pipeline = "GligenLayoutPipeline"
width = 32
height = 32
steps = 4

[[model]]
name = "tiny-superres"
task = "superres"
source = "tiny-superres"
pipeline = "SuperResPipeline"
steps = 4
default = true
sampler = "DDIM"

[[model]]
name = "tiny-compvis-superres"
task = "superres"
source = "tiny-compvis-superres"
pipeline = "SuperResPipeline"
steps = 4
sampler = "DDIM"

[[model]]
name = "tiny-inpaint"
task = "inpaint"
source = "tiny-inpaint"
pipeline = "InpaintPipeline"
width = 32
height = 32
steps = 4
default = true

[[model]]
name = "tiny-sd-inpaint"
task = "inpaint"
source = "tiny-sd-inpaint"
pipeline = "InpaintPipeline"
width = 32
height = 32
steps = 4
"""


def write_tiny_catalog(root: str | Path) -> Path:
    """Write every tiny model and a catalog listing them; returns the catalog path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    cat = root / "catalog.toml"
    if cat.exists():
        return cat
    write_builtin_like(root)
    write_hub_like(root)
    write_noise_like(root)
    cat.write_text(TINY_CATALOG + NOISE_CATALOG)
    return cat
