"""The networks the diffusion stages train: building them, loading them from an exported model,
and widening a loaded UNet's input for conditioning it did not read before."""
from __future__ import annotations

from pathlib import Path

import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextModel

from ..text import TextEncoderConfig, build_text_encoder


def build_unet(cfg, in_channels: int, out_channels: int = 4) -> UNet2DConditionModel:
    """Text-conditioned UNet (cross-attention + an attention-pooled text embedding added to the time
    embedding); attention only at the low resolutions. `cfg`: channels, layers_per_block, head_dim,
    text_hidden."""
    n = len(cfg.channels)
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1)   # no attention at full latent res
    up = ("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",)
    return UNet2DConditionModel(
        sample_size=16, in_channels=in_channels, out_channels=out_channels, down_block_types=down,
        up_block_types=up, block_out_channels=tuple(cfg.channels), layers_per_block=cfg.layers_per_block,
        cross_attention_dim=cfg.text_hidden, attention_head_dim=cfg.head_dim, norm_num_groups=32,
        addition_embed_type="text", addition_embed_type_num_heads=4)


def new_text_encoder(cfg, tokenizer):
    """The small transformer text encoder (tau_theta), trained from scratch. `cfg`: text_hidden,
    text_layers, max_length."""
    return build_text_encoder(TextEncoderConfig(cfg.text_hidden, cfg.text_layers, 4, cfg.max_length), tokenizer)


def load_text_models(folder: str | Path) -> tuple:
    """The UNet and text encoder (a CLIPTextModel) of an exported text-conditioned model, in float32."""
    unet = UNet2DConditionModel.from_pretrained(Path(folder) / "unet").float()
    return unet, CLIPTextModel.from_pretrained(Path(folder) / "text_encoder").float()


def widen_input(unet, in_channels: int, at: int | None = None):
    """A copy of `unet` taking `in_channels` inputs; the new input channels (inserted at input
    index `at`, default after the existing ones) start at zero, as Stable Diffusion inpainting
    was initialised from the text-to-image model."""
    cfg = dict(unet.config)
    cfg["in_channels"] = in_channels
    wide = type(unet).from_config(cfg)
    sd = unet.state_dict()
    w = sd["conv_in.weight"]  # (C, c_in, 3, 3)
    at = w.shape[1] if at is None else at
    new = torch.zeros(w.shape[0], in_channels - w.shape[1], *w.shape[2:])
    sd["conv_in.weight"] = torch.cat([w[:, :at], new, w[:, at:]], 1)
    wide.load_state_dict(sd)
    return wide


def fit_input(unet, in_channels: int, source: str, at: int | None = None, hint: str = ""):
    """A loaded `unet` (from `source`) made to take `in_channels` inputs: widened (new channels at
    zero, inserted at `at`) when it takes fewer; an error when it takes more."""
    n = unet.config.in_channels
    if n > in_channels:
        raise ValueError(f"{source} takes {n} input channels, more than this task's {in_channels}"
                         + (f" ({hint})" if hint else ""))
    return widen_input(unet, in_channels, at) if n < in_channels else unet


def tokenize(tokenizer, texts: list[str], max_length: int, device) -> torch.Tensor:
    """(B, max_length) token ids, padded and cut to `max_length`."""
    return tokenizer(texts, padding="max_length", max_length=max_length, truncation=True,
                     return_tensors="pt").input_ids.to(device)
