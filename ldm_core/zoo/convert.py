"""One-time conversion of an original CompVis LDM / first-stage checkpoint to diffusers components.

Key names and semantics are those of CompVis/latent-diffusion@a506df5 (read, not copied):
  ldm/modules/diffusionmodules/openaimodel.py  UNetModel, ResBlock, AttentionBlock (legacy QKV)
  ldm/modules/attention.py                     SpatialTransformer (same key names as diffusers')
  ldm/modules/diffusionmodules/model.py        first-stage Encoder / Decoder / AttnBlock
  ldm/models/autoencoder.py                    VQModel(Interface), AutoencoderKL
  ldm/models/diffusion/ddpm.py                 schedule buffers, scale_factor, model_ema
  ldm/modules/ema.py                           EMA buffers: parameter names with the dots removed
Every source key is renamed by a table built from the config; a key the table does not know, a
missing key or a shape mismatch refuses the whole conversion (ConversionError naming it), and
each model is loaded strictly. Config `target:` strings are compared, never imported.

What each zoo config becomes:
  openaimodel + AttentionBlock -> UNet2DModel (head dim fixed: num_head_channels, or num_heads
      with a constant channels/heads) or LDMUNet2DModel (below: num_heads fixed while the channels
      vary, lsun_churches256); use_scale_shift_norm -> resnet_time_scale_shift="scale_shift";
      resblock_updown -> down/upsample_type="resnet".
  openaimodel + SpatialTransformer -> UNet2DConditionModel (attention_head_dim = heads per level).
  VQModel(Interface) -> VQModel; AutoencoderKL -> AutoencoderKL (scaling_factor = scale_factor).
  ClassEmbedder -> ldm_core ClassEmbedder; the schedule -> DDIMScheduler.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import diffusers
import torch
import yaml
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel, UNet2DModel, VQModel
from diffusers.configuration_utils import ConfigMixin

from ..pipelines.class_embedder import ClassEmbedder
from . import SOURCE_FILE, imagenet_classes, zoo_dir
from .safe_load import read_state_dict

CONVERTER_VERSION = 1
LDM = "ldm.models.diffusion.ddpm.LatentDiffusion"
OPENAI_UNET = "ldm.modules.diffusionmodules.openaimodel.UNetModel"
VQ = ("ldm.models.autoencoder.VQModelInterface", "ldm.models.autoencoder.VQModel")
KL = ("ldm.models.autoencoder.AutoencoderKL",)
CLASS_EMBEDDER = "ldm.modules.encoders.modules.ClassEmbedder"
# DDPM.register_schedule's buffers (ddpm.py): checked against the config, not converted
SCHEDULE_BUFFERS = {"betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                    "posterior_mean_coef1", "posterior_mean_coef2", "lvlb_weights", "logvar"}


class ConversionError(ValueError):
    """The checkpoint/config pair cannot be converted faithfully; nothing was written."""


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


def read_config(path) -> dict:
    """An original config.yaml as data (yaml.safe_load); its `target:` strings are only compared."""
    try:
        cfg = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConversionError(f"{Path(path).name}: not a readable YAML config ({type(e).__name__})") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict) or "target" not in cfg["model"]:
        raise ConversionError(f"{Path(path).name}: no model.target, not a latent-diffusion config")
    return cfg


@dataclass
class Converted:
    pipeline: str                      # "UnconditionalPipeline" | "ClassConditionalPipeline" | "FirstStage"
    vae: torch.nn.Module
    unet: torch.nn.Module | None = None
    scheduler: DDIMScheduler | None = None
    class_embedder: ClassEmbedder | None = None
    ema: bool = False                  # whether the UNet's weights are the EMA copy

    def components(self) -> dict:
        return {k: v for k in ("vae", "unet", "scheduler", "class_embedder") if (v := getattr(self, k)) is not None}


# ------------------------------------------------------------------ renaming machinery
def _flat(t: torch.Tensor) -> torch.Tensor:
    """A 1x1 conv weight (C, C, 1[, 1]) -> the linear weight (C, C) diffusers' Attention holds."""
    return t.flatten(1) if t.ndim > 2 and t.shape[2:].numel() == 1 else t


def _resblock(table: dict, src: str, dst: str, openai: bool) -> None:
    pairs = ((("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("emb_layers.1", "time_emb_proj"),
              ("out_layers.0", "norm2"), ("out_layers.3", "conv2"), ("skip_connection", "conv_shortcut"))
             if openai else  # model.py ResnetBlock (no temb in the first stage)
             (("norm1", "norm1"), ("conv1", "conv1"), ("norm2", "norm2"), ("conv2", "conv2"),
              ("nin_shortcut", "conv_shortcut")))
    for a, b in pairs:
        table[f"{src}.{a}"] = (f"{dst}.{b}", None)


def _attnblock(table: dict, src: str, dst: str) -> None:
    """model.py AttnBlock (one head; q, k, v, proj_out are 1x1 convs) -> diffusers Attention."""
    for a, b in (("norm", "group_norm"), ("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("proj_out", "to_out.0")):
        table[f"{src}.{a}"] = (f"{dst}.{b}", _flat)


def _split_qkv(t: torch.Tensor, heads: int) -> tuple[torch.Tensor, ...]:
    """openaimodel AttentionBlock.qkv (conv1d C -> 3C) under QKVAttentionLegacy: the 3C outputs
    are (heads, 3, C/heads): each head's q, k, v lie together. -> to_q, to_k, to_v, each (C, ...)."""
    c3 = t.shape[0]
    w = t.reshape(heads, 3, c3 // (3 * heads), *t.shape[1:])        # (H, 3, d, C[, 1]) or (H, 3, d)
    return tuple(_flat(w[:, i].reshape(c3 // 3, *t.shape[1:])) for i in range(3))


def _remap(sd: dict, table: dict, qkv: dict) -> tuple[dict, list[str]]:
    """Rename by the longest module prefix in `table` ({src: (dst, fn)}); `qkv` {src module: (dst, heads)}."""
    out, left = {}, []
    for key, t in sd.items():
        mod, _, param = key.rpartition(".")
        if mod in qkv:
            dst, heads = qkv[mod]
            for name, part in zip(("to_q", "to_k", "to_v"), _split_qkv(t, heads)):
                out[f"{dst}.{name}.{param}"] = part
            continue
        parts = key.split(".")
        for i in range(len(parts) - 1, 0, -1):
            pre = ".".join(parts[:i])
            if pre in table:
                dst, fn = table[pre]
                out[dst + key[len(pre):]] = fn(t) if fn else t
                break
        else:
            left.append(key)
    return out, left


def _load(model: torch.nn.Module, sd: dict, left: list[str], where: str) -> torch.nn.Module:
    """Strict: every source key used, every parameter given, every shape equal."""
    if left:
        raise ConversionError(f"{where}: {len(left)} keys this converter does not know, e.g. {left[:4]}")
    want = model.state_dict()
    missing = [k for k in want if k not in sd]
    extra = [k for k in sd if k not in want]
    shapes = [f"{k} {tuple(sd[k].shape)} != {tuple(want[k].shape)}" for k in want
              if k in sd and sd[k].shape != want[k].shape]
    if missing or extra or shapes:
        raise ConversionError(f"{where}: the checkpoint does not match its config: missing {missing[:4]}, "
                              f"unexpected {extra[:4]}, shape mismatches {shapes[:4]} (diffusers names)")
    floats = {t.dtype for t in sd.values() if t.is_floating_point()}
    if len(floats) == 1 and (dtype := floats.pop()) != torch.float32:
        model.to(dtype)                                              # keep the source precision
    model.load_state_dict(sd, strict=True)
    return model.eval()


def _need(p: dict, key: str, where: str):
    if key not in p:
        raise ConversionError(f"{where}: config has no {key}")
    return p[key]


# ------------------------------------------------------------------ first stage
def convert_first_stage(sd: dict, node: dict, scale_factor: float = 1.0) -> torch.nn.Module:
    """Encoder/decoder keys (no prefix) of a VQ or KL autoencoder -> diffusers VQModel / AutoencoderKL."""
    target, p = node.get("target"), node.get("params") or {}
    if target not in VQ + KL:
        raise ConversionError(f"first_stage_config.target {target!r} is not a VQ or KL autoencoder")
    dd = _need(p, "ddconfig", "first_stage_config")
    for key, ok in (("double_z", target in KL), ("tanh_out", False), ("give_pre_end", False),
                    ("resamp_with_conv", True), ("use_linear_attn", False)):
        if dd.get(key, ok) != ok:
            raise ConversionError(f"first_stage_config ddconfig.{key}={dd[key]!r} is not supported")
    attn_type = dd.get("attn_type", "vanilla")
    if attn_type not in ("vanilla", "none"):
        raise ConversionError(f"first_stage_config ddconfig.attn_type={attn_type!r} is not supported")
    if p.get("remap") is not None:
        raise ConversionError("first_stage_config remap: codebook remapping is not supported")
    ch, mult, nrb, z = (_need(dd, k, "ddconfig") for k in ("ch", "ch_mult", "num_res_blocks", "z_channels"))
    res, embed = dd.get("resolution", 256), _need(p, "embed_dim", "first_stage_config")
    n = len(mult)
    attn = [attn_type != "none" and res // 2 ** i in (dd.get("attn_resolutions") or []) for i in range(n)]

    table = {"encoder.conv_in": ("encoder.conv_in", None), "encoder.norm_out": ("encoder.conv_norm_out", None),
             "encoder.conv_out": ("encoder.conv_out", None), "decoder.conv_in": ("decoder.conv_in", None),
             "decoder.norm_out": ("decoder.conv_norm_out", None), "decoder.conv_out": ("decoder.conv_out", None),
             "quant_conv": ("quant_conv", None), "post_quant_conv": ("post_quant_conv", None)}
    for side in ("encoder", "decoder"):
        _resblock(table, f"{side}.mid.block_1", f"{side}.mid_block.resnets.0", openai=False)
        _attnblock(table, f"{side}.mid.attn_1", f"{side}.mid_block.attentions.0")
        _resblock(table, f"{side}.mid.block_2", f"{side}.mid_block.resnets.1", openai=False)
    for i in range(n):   # encoder.down.i: level i (256² first); decoder.up.i: the same level, listed last first
        u = n - 1 - i    # diffusers' up_blocks start at the lowest resolution
        for j in range(nrb):
            _resblock(table, f"encoder.down.{i}.block.{j}", f"encoder.down_blocks.{i}.resnets.{j}", openai=False)
            _attnblock(table, f"encoder.down.{i}.attn.{j}", f"encoder.down_blocks.{i}.attentions.{j}")
        for j in range(nrb + 1):
            _resblock(table, f"decoder.up.{i}.block.{j}", f"decoder.up_blocks.{u}.resnets.{j}", openai=False)
            _attnblock(table, f"decoder.up.{i}.attn.{j}", f"decoder.up_blocks.{u}.attentions.{j}")
        table[f"encoder.down.{i}.downsample.conv"] = (f"encoder.down_blocks.{i}.downsamplers.0.conv", None)
        table[f"decoder.up.{i}.upsample.conv"] = (f"decoder.up_blocks.{u}.upsamplers.0.conv", None)
    kw = dict(in_channels=dd.get("in_channels", 3), out_channels=dd.get("out_ch", 3), latent_channels=z,
              block_out_channels=[ch * m for m in mult], layers_per_block=nrb, act_fn="silu", norm_num_groups=32,
              sample_size=res, mid_block_add_attention=attn_type != "none",
              down_block_types=["AttnDownEncoderBlock2D" if a else "DownEncoderBlock2D" for a in attn],
              up_block_types=["AttnUpDecoderBlock2D" if a else "UpDecoderBlock2D" for a in reversed(attn)])
    if target in VQ:
        if scale_factor != 1.0:   # the studio decodes VQ latents unscaled, as diffusers' LDMPipeline
            raise ConversionError(f"scale_factor {scale_factor} with a VQ first stage is not supported (only 1.0)")
        table["quantize.embedding"] = ("quantize.embedding", None)
        model = VQModel(**kw, num_vq_embeddings=_need(p, "n_embed", "first_stage"), vq_embed_dim=embed,
                        scaling_factor=1.0)
    else:
        if embed != z:   # diffusers' quant_conv is (2z -> 2z)
            raise ConversionError(f"first_stage_config embed_dim {embed} != z_channels {z} is not supported")
        model = AutoencoderKL(**kw, scaling_factor=float(scale_factor))
    out, left = _remap(sd, table, {})
    return _load(model, out, left, "first stage")


# ------------------------------------------------------------------ openaimodel UNet
def convert_unet(sd: dict, node: dict) -> torch.nn.Module:
    """`model.diffusion_model.*` (prefix removed) + unet_config -> UNet2DModel / LDMUNet2DModel /
    UNet2DConditionModel."""
    if node.get("target") != OPENAI_UNET:
        raise ConversionError(f"unet_config.target {node.get('target')!r} is not openaimodel.UNetModel")
    p = node.get("params") or {}
    for key, ok in (("dims", 2), ("conv_resample", True), ("use_new_attention_order", False),
                    ("num_classes", None), ("n_embed", None), ("legacy", True), ("use_linear_in_transformer", False)):
        if p.get(key, ok) != ok:
            raise ConversionError(f"unet_config.{key}={p[key]!r} is not supported")
    mc, mult = _need(p, "model_channels", "unet_config"), _need(p, "channel_mult", "unet_config")
    nrb, ares = _need(p, "num_res_blocks", "unet_config"), _need(p, "attention_resolutions", "unet_config")
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
    spatial, updown = p.get("use_spatial_transformer", False), p.get("resblock_updown", False)

    table = {"time_embed.0": ("time_embedding.linear_1", None), "time_embed.2": ("time_embedding.linear_2", None),
             "input_blocks.0.0": ("conv_in", None), "out.0": ("conv_norm_out", None), "out.2": ("conv_out", None)}
    qkv = {}

    def attention(src, dst, h):
        if spatial:   # SpatialTransformer: diffusers' Transformer2DModel uses the same names inside
            table[src] = (dst, None)
        else:         # AttentionBlock: norm, qkv (split per head), proj_out
            table[f"{src}.norm"] = (f"{dst}.group_norm", None)
            table[f"{src}.proj_out"] = (f"{dst}.to_out.0", _flat)
            qkv[f"{src}.qkv"] = (dst, h)

    k = 1   # input_blocks: [conv_in], then per level nrb x [ResBlock, attn?], then [Downsample | ResBlock(down)]
    for i in range(n):
        for j in range(nrb):
            _resblock(table, f"input_blocks.{k}.0", f"down_blocks.{i}.resnets.{j}", openai=True)
            if attn[i]:
                attention(f"input_blocks.{k}.1", f"down_blocks.{i}.attentions.{j}", heads[i])
            k += 1
        if i < n - 1:
            if updown:
                _resblock(table, f"input_blocks.{k}.0", f"down_blocks.{i}.downsamplers.0", openai=True)
            else:
                table[f"input_blocks.{k}.0.op"] = (f"down_blocks.{i}.downsamplers.0.conv", None)
            k += 1
    _resblock(table, "middle_block.0", "mid_block.resnets.0", openai=True)
    attention("middle_block.1", "mid_block.attentions.0", heads[-1])
    _resblock(table, "middle_block.2", "mid_block.resnets.1", openai=True)
    k = 0   # output_blocks: deepest level first, nrb+1 x [ResBlock, attn?, (Upsample | ResBlock(up)) at the last]
    for u, i in enumerate(reversed(range(n))):
        for j in range(nrb + 1):
            _resblock(table, f"output_blocks.{k}.0", f"up_blocks.{u}.resnets.{j}", openai=True)
            if attn[i]:
                attention(f"output_blocks.{k}.1", f"up_blocks.{u}.attentions.{j}", heads[i])
            if i > 0 and j == nrb:
                up = f"output_blocks.{k}.{1 + attn[i]}"
                if updown:
                    _resblock(table, up, f"up_blocks.{u}.upsamplers.0", openai=True)
                else:
                    table[f"{up}.conv"] = (f"up_blocks.{u}.upsamplers.0.conv", None)
            k += 1

    kw = dict(sample_size=p.get("image_size"), in_channels=_need(p, "in_channels", "unet_config"),
              out_channels=_need(p, "out_channels", "unet_config"), block_out_channels=chans, layers_per_block=nrb,
              flip_sin_to_cos=True, freq_shift=0,        # timestep_embedding: cat([cos, sin]), exponent / half
              act_fn="silu", norm_num_groups=32, norm_eps=1e-5, downsample_padding=1,
              resnet_time_scale_shift="scale_shift" if p.get("use_scale_shift_norm") else "default")
    if spatial:
        if updown:
            raise ConversionError("unet_config: resblock_updown with use_spatial_transformer is not supported")
        model = UNet2DConditionModel(
            **kw, cross_attention_dim=_need(p, "context_dim", "unet_config"),
            transformer_layers_per_block=p.get("transformer_depth", 1),
            attention_head_dim=heads,                 # UNet2DConditionModel: this field is the number of heads
            down_block_types=["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn],
            up_block_types=["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)],
            mid_block_type="UNetMidBlock2DCrossAttn", use_linear_projection=False)
    else:
        kw.update(attn_norm_num_groups=32,            # the mid attention keeps its norm with scale_shift too
                  down_block_types=[("AttnDownBlock2D" if a else "ResnetDownsampleBlock2D" if updown else "DownBlock2D")
                                    for a in attn],
                  up_block_types=[("AttnUpBlock2D" if a else "ResnetUpsampleBlock2D" if updown else "UpBlock2D")
                                  for a in reversed(attn)],
                  downsample_type="resnet" if updown else "conv", upsample_type="resnet" if updown else "conv")
        dims = {c // h for c, h, a in zip(chans, heads, attn) if a} | {chans[-1] // heads[-1]}
        if len(dims) == 1:
            model = UNet2DModel(**kw, attention_head_dim=dims.pop())
        else:
            model = LDMUNet2DModel(**kw, attention_head_dim=math.gcd(*chans), attention_heads=heads + heads[-1:])
    out, left = _remap(sd, table, qkv)
    return _load(model, out, left, "UNet")


# ------------------------------------------------------------------ the whole model
def make_scheduler(p: dict) -> DDIMScheduler:
    """ddpm.py's schedule as diffusers' DDIM. "linear" = linspace(sqrt(start), sqrt(end))**2 =
    diffusers' "scaled_linear". steps_offset=1 and set_alpha_to_one=False are CompVis' own DDIM
    sampler (ldm/models/diffusion/ddim.py, util.make_ddim_timesteps: steps `range(0, T, T//S) + 1`,
    the last step's alpha_prev = alphas_cumprod[0]); clip_sample=False as its sampler (no clipping)."""
    param = p.get("parameterization", "eps")
    if param not in ("eps", "x0"):
        raise ConversionError(f"parameterization {param!r} is not supported")
    kw = dict(num_train_timesteps=p.get("timesteps", 1000), clip_sample=False, set_alpha_to_one=False,
              steps_offset=1, prediction_type="epsilon" if param == "eps" else "sample")
    if p.get("given_betas") is not None:
        return DDIMScheduler(**kw, trained_betas=list(map(float, p["given_betas"])))
    if p.get("beta_schedule", "linear") != "linear":
        raise ConversionError(f"beta_schedule {p['beta_schedule']!r} is not supported (only linear)")
    return DDIMScheduler(**kw, beta_schedule="scaled_linear", beta_start=p.get("linear_start", 1e-4),
                         beta_end=p.get("linear_end", 2e-2))   # DDPM's defaults


def _check_schedule(sched: DDIMScheduler, sd: dict) -> None:
    for key, ours in (("betas", sched.betas), ("alphas_cumprod", sched.alphas_cumprod)):
        if key in sd and (sd[key].shape != ours.shape or
                          not torch.allclose(sd[key].double(), ours.double(), rtol=1e-4, atol=1e-7)):
            raise ConversionError(f"the config's noise schedule does not match the checkpoint's {key} buffer")


def _take(sd: dict, prefix: str) -> dict:
    return {k[len(prefix):]: sd.pop(k) for k in [k for k in sd if k.startswith(prefix)]}


def convert_state_dict(sd: dict, config: dict, *, ema: bool | None = None) -> Converted:
    """An original state dict + its config -> diffusers components (nothing half-loaded). `ema`:
    None takes the weights CompVis' sampling scripts run: they sample inside `model.ema_scope()`
    (scripts/sample_diffusion.py, txt2img.py, the cin notebook), i.e. the EMA copy whenever the
    config keeps `use_ema` (DDPM's default: True) and the checkpoint holds one; True insists on the
    EMA copy, False takes model.diffusion_model.*."""
    model = config["model"]
    target, p = model.get("target"), model.get("params") or {}
    sd = dict(sd)
    if target in VQ + KL:      # a first stage alone: bare encoder.* / decoder.* keys; loss.* is training only
        _take(sd, "loss.")
        return Converted("FirstStage", convert_first_stage(sd, model))
    if target != LDM:
        raise ConversionError(f"model.target {target!r} is not LatentDiffusion or a first stage")

    cs = p.get("cond_stage_config")
    key = p.get("conditioning_key") or (None if cs == "__is_unconditional__"
                                        else "concat" if p.get("concat_mode", True) else "crossattn")
    if cs == "__is_unconditional__":   # ddpm.py: an unconditional model has no conditioning key
        key, pipeline = None, "UnconditionalPipeline"
    elif key == "crossattn" and isinstance(cs, dict) and cs.get("target") == CLASS_EMBEDDER:
        pipeline = "ClassConditionalPipeline"
    else:
        raise ConversionError(f"conditioning_key {key!r} with cond_stage_config "
                              f"{cs.get('target') if isinstance(cs, dict) else cs!r} is not supported")

    scheduler = make_scheduler(p)
    schedule = {k: sd.pop(k) for k in list(sd) if k in SCHEDULE_BUFFERS}
    _check_schedule(scheduler, schedule)
    scale = sd.pop("scale_factor", None)     # a buffer only when scale_by_std (ddpm.py); else a plain param
    if scale is None and p.get("scale_by_std"):
        raise ConversionError("scale_by_std model without its scale_factor buffer")
    scale = float(scale) if scale is not None else float(p.get("scale_factor", 1.0))

    unet_sd = _take(sd, "model.diffusion_model.")
    ema_sd = _take(sd, "model_ema.")
    for k in ("decay", "num_updates"):   # LitEma's own buffers
        ema_sd.pop(k, None)
    if ema is None:
        ema = bool(ema_sd) and p.get("use_ema", True) is not False
    if ema:
        if not ema_sd:
            raise ConversionError("ema=True but the checkpoint has no EMA weights (model_ema.*)")
        missing = [k for k in unet_sd if "diffusion_model" + k.replace(".", "") not in ema_sd]
        if missing:
            raise ConversionError(f"the EMA copy lacks {missing[:4]} (model_ema.diffusion_model...)")
        unet_sd = {k: ema_sd.pop("diffusion_model" + k.replace(".", "")) for k in unet_sd}
        if ema_sd:
            raise ConversionError(f"EMA keys without a model parameter: {list(ema_sd)[:4]}")
    # else the EMA copy (if any) is left out

    vae_sd = _take(sd, "first_stage_model.")
    _take(vae_sd, "loss.")
    cond_sd = _take(sd, "cond_stage_model.")
    if sd:
        raise ConversionError(f"{len(sd)} keys this converter does not know, e.g. {list(sd)[:4]}")
    unet = convert_unet(unet_sd, _need(p, "unet_config", "model.params"))
    vae = convert_first_stage(vae_sd, _need(p, "first_stage_config", "model.params"), scale)
    embedder = None
    if pipeline == "ClassConditionalPipeline":
        w = cond_sd.pop("embedding.weight", None)
        if w is None or cond_sd:
            raise ConversionError(f"cond_stage_model: expected embedding.weight only, got "
                                  f"{['embedding.weight'] if w is None else list(cond_sd)[:4]}")
        n_classes, dim = w.shape
        cp = cs.get("params") or {}
        if (cp.get("n_classes", 1000), cp.get("embed_dim", 512)) != (n_classes, dim):
            raise ConversionError(f"cond_stage_model.embedding.weight {tuple(w.shape)} does not match "
                                  f"n_classes/embed_dim of the config")
        embedder = ClassEmbedder(n_classes, dim, class_names=list(imagenet_classes()) if n_classes in (1000, 1001)
                                 else None, null_class=1000 if n_classes == 1001 else None)
        _load(embedder, {"embedding.weight": w}, [], "class embedder")
    elif cond_sd:
        raise ConversionError(f"an unconditional model with cond_stage_model keys {list(cond_sd)[:4]}")
    return Converted(pipeline, vae, unet, scheduler, embedder, ema)


# ------------------------------------------------------------------ writing
def _library(component) -> list[str]:
    cls = type(component)
    return ["diffusers" if cls.__module__.startswith("diffusers") else "ldm_core", cls.__name__]


def save_converted(conv: Converted, folder, source: dict) -> None:
    """Each component as diffusers writes it (safetensors), model_index.json, source.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index = {"_class_name": conv.pipeline, "_diffusers_version": diffusers.__version__}
    for name, comp in conv.components().items():
        if isinstance(comp, DDIMScheduler):
            comp.save_pretrained(folder / name)
        else:
            comp.save_pretrained(folder / name, safe_serialization=True)
        index[name] = _library(comp)
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    (folder / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def convert_checkpoint(ckpt_path, config_path, name: str, *, ema: bool | None = None, root=None,
                       extra: dict | None = None) -> Path:
    """Read `ckpt_path` safely, convert it with `config_path`, write `<root or zoo_dir()>/<name>/`
    atomically (a temp folder beside it, then rename). `extra` is added to source.json."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise ConversionError(f"{name!r} is not a model folder name")
    ckpt_path, config_path = Path(ckpt_path), Path(config_path)
    root = Path(root) if root else zoo_dir()
    sd = read_state_dict(ckpt_path)
    conv = convert_state_dict(sd, read_config(config_path), ema=ema)
    source = {"file": ckpt_path.name, "sha256": sha256_file(ckpt_path), "config": config_path.name, "ema": conv.ema,
              "converted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "converter": CONVERTER_VERSION, **(extra or {})}
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.converting-", dir=root))
    dest, old = root / name, root / f".{name}.old"
    try:
        save_converted(conv, tmp, source)
        shutil.rmtree(old, ignore_errors=True)
        if dest.exists():
            dest.rename(old)           # the earlier conversion stays until the new one is in place
        try:
            tmp.rename(dest)
        except BaseException:
            if old.exists():
                old.rename(dest)
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return dest
