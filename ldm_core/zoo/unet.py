"""The openaimodel UNet of an original checkpoint -> a diffusers UNet.

Key names and semantics are those of CompVis/latent-diffusion@a506df5 (read, not copied):
  ldm/modules/diffusionmodules/openaimodel.py  UNetModel, ResBlock, AttentionBlock (legacy QKV)
  ldm/modules/attention.py                     SpatialTransformer (same key names as diffusers')
  openaimodel + AttentionBlock -> UNet2DModel (head dim fixed: num_head_channels, or num_heads
      with a constant channels/heads) or LDMUNet2DModel (below: num_heads fixed while the channels
      vary, lsun_churches256); use_scale_shift_norm -> resnet_time_scale_shift="scale_shift";
      resblock_updown -> down/upsample_type="resnet".
  openaimodel + SpatialTransformer -> UNet2DConditionModel (attention_head_dim = heads per level).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from diffusers import UNet2DConditionModel, UNet2DModel
from diffusers.configuration_utils import ConfigMixin

from .rename import ConversionError, add_resblock, flat, load_strict, need, remap

OPENAI_UNET = "ldm.modules.diffusionmodules.openaimodel.UNetModel"


class LDMUNet2DModel(UNet2DModel):
    """UNet2DModel with a fixed number of attention heads per level, as openaimodel's `num_heads`
    gives (lsun_churches256: 8 heads at 192, 384 and 768 channels). UNet2DModel has one head
    *dim* for all levels, so it cannot say this; setting `attn.heads` after loading would not
    persist. Here the heads are a config field (`attention_heads`: one per level, then the mid
    block's), reapplied on every construction, so save/from_pretrained round-trips. The modules
    are built with a head dim dividing every width (shapes: to_q/k/v stay (C, C)), then each
    attention's heads and softmax scale are set (the processors split by `attn.heads`)."""

    @staticmethod
    def _get_init_keys(input_class):   # ConfigMixin reads __init__'s signature; ours forwards **kwargs
        keys = ConfigMixin._get_init_keys(input_class)
        if isinstance(input_class, type) and issubclass(input_class, LDMUNet2DModel):
            keys = (keys - {"kwargs"}) | ConfigMixin._get_init_keys(UNet2DModel)
        return keys

    def __init__(self, attention_heads: list[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.register_to_config(attention_heads=attention_heads)
        if attention_heads is None:
            return
        n = len(self.down_blocks)
        if len(attention_heads) != n + 1:
            raise ValueError(f"attention_heads: {n + 1} values (levels, then mid), got {len(attention_heads)}")
        levels = [(b, attention_heads[i]) for i, b in enumerate(self.down_blocks)]
        levels += [(b, attention_heads[n - 1 - i]) for i, b in enumerate(self.up_blocks)]
        levels += [(self.mid_block, attention_heads[n])]
        for block, heads in levels:
            for attn in getattr(block, "attentions", None) or []:
                if attn is None:
                    continue
                if attn.inner_dim % heads:
                    raise ValueError(f"{attn.inner_dim} channels do not split into {heads} heads")
                attn.heads = attn.sliceable_head_dim = heads
                attn.scale = (attn.inner_dim // heads) ** -0.5


class _Levels(NamedTuple):
    """The UNet's shape as unet_config gives it, per level (lowest resolution last)."""
    chans: list[int]        # model_channels * channel_mult
    attn: list[bool]        # attention at this level
    heads: list[int]        # attention heads at this level (openaimodel's rule, legacy=True)
    nrb: int                # num_res_blocks
    spatial: bool           # use_spatial_transformer
    updown: bool            # resblock_updown


def _levels(p: dict) -> _Levels:
    """unet_config's params, checked against what the conversion supports, as per-level facts."""
    for key, ok in (("dims", 2), ("conv_resample", True), ("use_new_attention_order", False),
                    ("num_classes", None), ("n_embed", None), ("legacy", True), ("use_linear_in_transformer", False)):
        if p.get(key, ok) != ok:
            raise ConversionError(f"unet_config.{key}={p[key]!r} is not supported")
    mc, mult = need(p, "model_channels", "unet_config"), need(p, "channel_mult", "unet_config")
    nrb, ares = need(p, "num_res_blocks", "unet_config"), need(p, "attention_resolutions", "unet_config")
    nh, nhc = p.get("num_heads", -1), p.get("num_head_channels", -1)
    if nh == -1 and nhc == -1:
        raise ConversionError("unet_config: neither num_heads nor num_head_channels is set")
    if p.get("num_heads_upsample", -1) not in (-1, nh):
        raise ConversionError("unet_config.num_heads_upsample differing from num_heads is not supported")
    if not isinstance(nrb, int):
        raise ConversionError("unet_config.num_res_blocks per level is not supported")
    chans, n = [mc * m for m in mult], len(mult)
    attn = [2 ** i in ares for i in range(n)]          # openaimodel: attention where ds is listed
    heads = [c // nhc if nhc != -1 else nh for c in chans]   # openaimodel's rule (legacy=True)
    if any(c % h for c, h in zip(chans, heads)):
        raise ConversionError(f"unet_config: channels {chans} do not split into heads {heads}")
    return _Levels(chans, attn, heads, nrb, p.get("use_spatial_transformer", False), p.get("resblock_updown", False))


def _add_attention(table: dict, qkv: dict, src: str, dst: str, heads: int, spatial: bool) -> None:
    if spatial:   # SpatialTransformer: diffusers' Transformer2DModel uses the same names inside
        table[src] = (dst, None)
    else:         # AttentionBlock: norm, qkv (split per head), proj_out
        table[f"{src}.norm"] = (f"{dst}.group_norm", None)
        table[f"{src}.proj_out"] = (f"{dst}.to_out.0", flat)
        qkv[f"{src}.qkv"] = (dst, heads)


def _unet_table(lv: _Levels) -> tuple[dict, dict]:
    """(renaming table, qkv splits) from openaimodel's input/middle/output blocks to diffusers'."""
    table = {"time_embed.0": ("time_embedding.linear_1", None), "time_embed.2": ("time_embedding.linear_2", None),
             "input_blocks.0.0": ("conv_in", None), "out.0": ("conv_norm_out", None), "out.2": ("conv_out", None)}
    qkv = {}
    n, nrb, attn, heads, updown = len(lv.chans), lv.nrb, lv.attn, lv.heads, lv.updown
    k = 1   # input_blocks: [conv_in], then per level nrb x [ResBlock, attn?], then [Downsample | ResBlock(down)]
    for i in range(n):
        for j in range(nrb):
            add_resblock(table, f"input_blocks.{k}.0", f"down_blocks.{i}.resnets.{j}", openai=True)
            if attn[i]:
                _add_attention(table, qkv, f"input_blocks.{k}.1", f"down_blocks.{i}.attentions.{j}", heads[i],
                               lv.spatial)
            k += 1
        if i < n - 1:
            if updown:
                add_resblock(table, f"input_blocks.{k}.0", f"down_blocks.{i}.downsamplers.0", openai=True)
            else:
                table[f"input_blocks.{k}.0.op"] = (f"down_blocks.{i}.downsamplers.0.conv", None)
            k += 1
    add_resblock(table, "middle_block.0", "mid_block.resnets.0", openai=True)
    _add_attention(table, qkv, "middle_block.1", "mid_block.attentions.0", heads[-1], lv.spatial)
    add_resblock(table, "middle_block.2", "mid_block.resnets.1", openai=True)
    k = 0   # output_blocks: deepest level first, nrb+1 x [ResBlock, attn?, (Upsample | ResBlock(up)) at the last]
    for u, i in enumerate(reversed(range(n))):
        for j in range(nrb + 1):
            add_resblock(table, f"output_blocks.{k}.0", f"up_blocks.{u}.resnets.{j}", openai=True)
            if attn[i]:
                _add_attention(table, qkv, f"output_blocks.{k}.1", f"up_blocks.{u}.attentions.{j}", heads[i],
                               lv.spatial)
            if i > 0 and j == nrb:
                up = f"output_blocks.{k}.{1 + attn[i]}"
                if updown:
                    add_resblock(table, up, f"up_blocks.{u}.upsamplers.0", openai=True)
                else:
                    table[f"{up}.conv"] = (f"up_blocks.{u}.upsamplers.0.conv", None)
            k += 1
    return table, qkv


def _unet_model(p: dict, lv: _Levels) -> torch.nn.Module:
    """The empty diffusers UNet of unet_config's shape."""
    chans, attn, heads, updown = lv.chans, lv.attn, lv.heads, lv.updown
    kw = dict(sample_size=p.get("image_size"), in_channels=need(p, "in_channels", "unet_config"),
              out_channels=need(p, "out_channels", "unet_config"), block_out_channels=chans, layers_per_block=lv.nrb,
              flip_sin_to_cos=True, freq_shift=0,        # timestep_embedding: cat([cos, sin]), exponent / half
              act_fn="silu", norm_num_groups=32, norm_eps=1e-5, downsample_padding=1,
              resnet_time_scale_shift="scale_shift" if p.get("use_scale_shift_norm") else "default")
    if lv.spatial:
        if updown:
            raise ConversionError("unet_config: resblock_updown with use_spatial_transformer is not supported")
        return UNet2DConditionModel(
            **kw, cross_attention_dim=need(p, "context_dim", "unet_config"),
            transformer_layers_per_block=p.get("transformer_depth", 1),
            attention_head_dim=heads,                 # UNet2DConditionModel: this field is the number of heads
            down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn],
            up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
            mid_block_type="UNetMidBlock2DCrossAttn", use_linear_projection=False)
    kw.update(attn_norm_num_groups=32,            # the mid attention keeps its norm with scale_shift too
              down_block_types=[("AttnDownBlock2D" if a else "ResnetDownsampleBlock2D" if updown else "DownBlock2D")
                                for a in attn],
              up_block_types=[("AttnUpBlock2D" if a else "ResnetUpsampleBlock2D" if updown else "UpBlock2D")
                              for a in reversed(attn)],
              downsample_type="resnet" if updown else "conv", upsample_type="resnet" if updown else "conv")
    dims = {c // h for c, h, a in zip(chans, heads, attn) if a} | {chans[-1] // heads[-1]}
    if len(dims) == 1:
        return UNet2DModel(**kw, attention_head_dim=dims.pop())
    return LDMUNet2DModel(**kw, attention_head_dim=math.gcd(*chans), attention_heads=heads + heads[-1:])


def convert_unet(sd: dict, node: dict) -> torch.nn.Module:
    """`model.diffusion_model.*` (prefix removed) + unet_config -> UNet2DModel / LDMUNet2DModel /
    UNet2DConditionModel."""
    if node.get("target") != OPENAI_UNET:
        raise ConversionError(f"unet_config.target {node.get('target')!r} is not openaimodel.UNetModel")
    p = node.get("params") or {}
    levels = _levels(p)
    table, qkv = _unet_table(levels)
    model = _unet_model(p, levels)
    out, left = remap(sd, table, qkv)
    return load_strict(model, out, left, "UNet")
