"""The first stage of an original checkpoint -> diffusers VQModel / AutoencoderKL.

Key names and semantics are those of CompVis/latent-diffusion@a506df5 (read, not copied):
  ldm/modules/diffusionmodules/model.py        first-stage Encoder / Decoder / AttnBlock
  ldm/models/autoencoder.py                    VQModel(Interface), AutoencoderKL
VQModel(Interface) -> VQModel; AutoencoderKL -> AutoencoderKL (scaling_factor = scale_factor).
"""
from __future__ import annotations

import torch
from diffusers import AutoencoderKL, VQModel

from .rename import ConversionError, add_attnblock, add_resblock, load_strict, need, remap

VQ = ("ldm.models.autoencoder.VQModelInterface", "ldm.models.autoencoder.VQModel")
KL = ("ldm.models.autoencoder.AutoencoderKL",)


def _checked_ddconfig(target, p: dict) -> tuple[dict, str]:
    """The ddconfig and its attn_type, refusing what diffusers' autoencoders cannot express."""
    if target not in VQ + KL:
        raise ConversionError(f"first_stage_config.target {target!r} is not a VQ or KL autoencoder")
    dd = need(p, "ddconfig", "first_stage_config")
    for key, ok in (("double_z", target in KL), ("tanh_out", False), ("give_pre_end", False),
                    ("resamp_with_conv", True), ("use_linear_attn", False)):
        if dd.get(key, ok) != ok:
            raise ConversionError(f"first_stage_config ddconfig.{key}={dd[key]!r} is not supported")
    attn_type = dd.get("attn_type", "vanilla")
    if attn_type not in ("vanilla", "none"):
        raise ConversionError(f"first_stage_config ddconfig.attn_type={attn_type!r} is not supported")
    if p.get("remap") is not None:
        raise ConversionError("first_stage_config remap: codebook remapping is not supported")
    return dd, attn_type


def _first_stage_table(n: int, nrb: int) -> dict:
    """Encoder.* / Decoder.* / quant convs, original prefix -> diffusers prefix, for n levels."""
    table = {"encoder.conv_in": ("encoder.conv_in", None), "encoder.norm_out": ("encoder.conv_norm_out", None),
             "encoder.conv_out": ("encoder.conv_out", None), "decoder.conv_in": ("decoder.conv_in", None),
             "decoder.norm_out": ("decoder.conv_norm_out", None), "decoder.conv_out": ("decoder.conv_out", None),
             "quant_conv": ("quant_conv", None), "post_quant_conv": ("post_quant_conv", None)}
    for side in ("encoder", "decoder"):
        add_resblock(table, f"{side}.mid.block_1", f"{side}.mid_block.resnets.0", openai=False)
        add_attnblock(table, f"{side}.mid.attn_1", f"{side}.mid_block.attentions.0")
        add_resblock(table, f"{side}.mid.block_2", f"{side}.mid_block.resnets.1", openai=False)
    for i in range(n):   # encoder.down.i: level i (256² first); decoder.up.i: the same level, listed last first
        u = n - 1 - i    # diffusers' up_blocks start at the lowest resolution
        for j in range(nrb):
            add_resblock(table, f"encoder.down.{i}.block.{j}", f"encoder.down_blocks.{i}.resnets.{j}", openai=False)
            add_attnblock(table, f"encoder.down.{i}.attn.{j}", f"encoder.down_blocks.{i}.attentions.{j}")
        for j in range(nrb + 1):
            add_resblock(table, f"decoder.up.{i}.block.{j}", f"decoder.up_blocks.{u}.resnets.{j}", openai=False)
            add_attnblock(table, f"decoder.up.{i}.attn.{j}", f"decoder.up_blocks.{u}.attentions.{j}")
        table[f"encoder.down.{i}.downsample.conv"] = (f"encoder.down_blocks.{i}.downsamplers.0.conv", None)
        table[f"decoder.up.{i}.upsample.conv"] = (f"decoder.up_blocks.{u}.upsamplers.0.conv", None)
    return table


def convert_first_stage(sd: dict, node: dict, scale_factor: float = 1.0) -> torch.nn.Module:
    """Encoder/decoder keys (no prefix) of a VQ or KL autoencoder -> diffusers VQModel / AutoencoderKL."""
    target, p = node.get("target"), node.get("params") or {}
    dd, attn_type = _checked_ddconfig(target, p)
    ch, mult, nrb, z = (need(dd, k, "ddconfig") for k in ("ch", "ch_mult", "num_res_blocks", "z_channels"))
    res, embed = dd.get("resolution", 256), need(p, "embed_dim", "first_stage_config")
    n = len(mult)
    attn = [attn_type != "none" and res // 2 ** i in (dd.get("attn_resolutions") or []) for i in range(n)]
    table = _first_stage_table(n, nrb)
    kw = dict(in_channels=dd.get("in_channels", 3), out_channels=dd.get("out_ch", 3), latent_channels=z,
              block_out_channels=[ch * m for m in mult], layers_per_block=nrb, act_fn="silu", norm_num_groups=32,
              sample_size=res, mid_block_add_attention=attn_type != "none",
              down_block_types=["AttnDownEncoderBlock2D" if a else "DownEncoderBlock2D" for a in attn],
              up_block_types=["AttnUpDecoderBlock2D" if a else "UpDecoderBlock2D" for a in reversed(attn)])
    if target in VQ:
        if scale_factor != 1.0:   # the studio decodes VQ latents unscaled, as diffusers' LDMPipeline
            raise ConversionError(f"scale_factor {scale_factor} with a VQ first stage is not supported (only 1.0)")
        table["quantize.embedding"] = ("quantize.embedding", None)
        model = VQModel(**kw, num_vq_embeddings=need(p, "n_embed", "first_stage"), vq_embed_dim=embed,
                        scaling_factor=1.0)
    else:
        if embed != z:   # diffusers' quant_conv is (2z -> 2z)
            raise ConversionError(f"first_stage_config embed_dim {embed} != z_channels {z} is not supported")
        model = AutoencoderKL(**kw, scaling_factor=float(scale_factor))
    out, left = remap(sd, table, {})
    return load_strict(model, out, left, "first stage")
