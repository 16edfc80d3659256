"""The zoo converter and its safe reader, on small random checkpoints written here in the ORIGINAL
CompVis key layout (shapes as openaimodel.py / model.py build them, for the vendored zoo configs
shrunk to 32 channels), checked against small independent re-implementations of the original
forward passes (ResBlock with scale-shift and up/down, AttentionBlock with QKVAttentionLegacy,
SpatialTransformer) and against diffusers' own KL VAE converter."""
from __future__ import annotations

import copy
import json
import math
import os
import sys
import types
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ldm_core.zoo import CONFIGS, ZOO
from ldm_core.zoo.bert import unet_node
from ldm_core.zoo.convert import (
    ConversionError,
    LDMUNet2DModel,
    convert_checkpoint,
    convert_state_dict,
    read_config,
)
from ldm_core.zoo.mirror_bert import bert_keys, is_bert, shrink_bert
from ldm_core.zoo.mirror_concat import concat_cond_keys
from ldm_core.zoo.mirror_keys import Weights
from ldm_core.zoo.safe_load import CheckpointRefused, ModelCheckpointStub, read_state_dict

torch.set_num_threads(1)
LDMS = [n for n, m in ZOO.items() if m.kind == "ldm"]
STAGES = [n for n, m in ZOO.items() if m.kind == "first_stage"]


# ------------------------------------------------------------------ original-layout checkpoints
def shrink(cfg: dict) -> dict:
    """A zoo config at 32 channels (heads rules and level structure kept)."""
    cfg = copy.deepcopy(cfg)
    p = cfg["model"]["params"]
    fs = p.get("first_stage_config", cfg["model"])["params"]
    fs["ddconfig"]["ch"] = 32
    fs["n_embed"] = 32 if "n_embed" in fs else None
    if "unet_config" in p:
        u = p["unet_config"]["params"]
        u["model_channels"] = 32
        if "context_dim" in u:
            u["context_dim"] = 64
            if is_bert(p["cond_stage_config"]):      # BERTEmbedder: n_embed is the UNet's context width
                shrink_bert(p, 64)
            else:                                    # ClassEmbedder
                p["cond_stage_config"]["params"]["embed_dim"] = 64
    return cfg


class _Keys(dict):
    """name -> random tensor of the original's shape (meta tensors: shapes only, for full sizes)."""
    meta = False

    def __init__(self, seed=0):
        super().__init__()
        self.g = torch.Generator().manual_seed(seed)

    def rand(self, *shape):
        return torch.empty(*shape, device="meta") if self.meta else torch.randn(*shape, generator=self.g)

    def put(self, name, *shape, bias=True):
        fan_in = math.prod(shape[1:])          # unit-scale activations through a deep random net
        self[name + ".weight"] = self.rand(*shape) / math.sqrt(fan_in)
        if bias:
            self[name + ".bias"] = self.rand(shape[0]) * 0.1

    def norm(self, name, c):
        self[name + ".weight"] = 1 + self.rand(c) * 0.1
        self[name + ".bias"] = self.rand(c) * 0.1


def openai_unet_sd(u: dict, seed=0) -> dict:
    """openaimodel.UNetModel's state dict (keys, shapes) for unet_config params `u`."""
    s = _Keys(seed)
    mc, mult, nrb, ares = u["model_channels"], u["channel_mult"], u["num_res_blocks"], u["attention_resolutions"]
    ss, updown, spatial = u.get("use_scale_shift_norm"), u.get("resblock_updown"), u.get("use_spatial_transformer")
    temb = 4 * mc

    def res(p, cin, cout):
        s.norm(f"{p}.in_layers.0", cin)
        s.put(f"{p}.in_layers.2", cout, cin, 3, 3)
        s.put(f"{p}.emb_layers.1", cout * (2 if ss else 1), temb)
        s.norm(f"{p}.out_layers.0", cout)
        s.put(f"{p}.out_layers.3", cout, cout, 3, 3)
        if cin != cout:
            s.put(f"{p}.skip_connection", cout, cin, 1, 1)

    def attn(p, c):
        s.norm(f"{p}.norm", c)
        if not spatial:
            s.put(f"{p}.qkv", 3 * c, c, 1)
            s.put(f"{p}.proj_out", c, c, 1)
            return
        ctx = u["context_dim"]
        s.put(f"{p}.proj_in", c, c, 1, 1)
        s.put(f"{p}.proj_out", c, c, 1, 1)
        for d in range(u.get("transformer_depth", 1)):
            b = f"{p}.transformer_blocks.{d}"
            for a, kv in (("attn1", c), ("attn2", ctx)):
                s.put(f"{b}.{a}.to_q", c, c, bias=False)
                s.put(f"{b}.{a}.to_k", c, kv, bias=False)
                s.put(f"{b}.{a}.to_v", c, kv, bias=False)
                s.put(f"{b}.{a}.to_out.0", c, c)
            s.put(f"{b}.ff.net.0.proj", 8 * c, c)
            s.put(f"{b}.ff.net.2", c, 4 * c)
            for n in ("norm1", "norm2", "norm3"):
                s.norm(f"{b}.{n}", c)

    s.put("time_embed.0", temb, mc)
    s.put("time_embed.2", temb, temb)
    s.put("input_blocks.0.0", mc, u["in_channels"], 3, 3)
    ch, chans, ds, k = mc, [mc], 1, 1
    for level, m in enumerate(mult):
        for _ in range(nrb):
            res(f"input_blocks.{k}.0", ch, m * mc)
            ch = m * mc
            if ds in ares:
                attn(f"input_blocks.{k}.1", ch)
            chans.append(ch)
            k += 1
        if level != len(mult) - 1:
            if updown:
                res(f"input_blocks.{k}.0", ch, ch)
            else:
                s.put(f"input_blocks.{k}.0.op", ch, ch, 3, 3)
            chans.append(ch)
            ds *= 2
            k += 1
    res("middle_block.0", ch, ch)
    attn("middle_block.1", ch)
    res("middle_block.2", ch, ch)
    k = 0
    for level, m in list(enumerate(mult))[::-1]:
        for i in range(nrb + 1):
            res(f"output_blocks.{k}.0", ch + chans.pop(), m * mc)
            ch, n = m * mc, 1
            if ds in ares:
                attn(f"output_blocks.{k}.1", ch)
                n = 2
            if level and i == nrb:
                if updown:
                    res(f"output_blocks.{k}.{n}", ch, ch)
                else:
                    s.put(f"output_blocks.{k}.{n}.conv", ch, ch, 3, 3)
                ds //= 2
            k += 1
    s.norm("out.0", ch)
    s.put("out.2", u["out_channels"], ch, 3, 3)
    return dict(s)


def first_stage_sd(p: dict, kl: bool, seed=1) -> dict:
    """model.py Encoder/Decoder (+ quantize / quant convs) state dict for first-stage params `p`."""
    s, dd = _Keys(seed), p["ddconfig"]
    ch, mult, nrb, z, e = dd["ch"], dd["ch_mult"], dd["num_res_blocks"], dd["z_channels"], p["embed_dim"]
    use_attn = dd.get("attn_type", "vanilla") != "none"

    def res(q, cin, cout):
        s.norm(f"{q}.norm1", cin)
        s.put(f"{q}.conv1", cout, cin, 3, 3)
        s.norm(f"{q}.norm2", cout)
        s.put(f"{q}.conv2", cout, cout, 3, 3)
        if cin != cout:
            s.put(f"{q}.nin_shortcut", cout, cin, 1, 1)

    def attn(q, c):
        s.norm(f"{q}.norm", c)
        for n in ("q", "k", "v", "proj_out"):
            s.put(f"{q}.{n}", c, c, 1, 1)

    def mid(side, c):
        res(f"{side}.mid.block_1", c, c)
        if use_attn:
            attn(f"{side}.mid.attn_1", c)
        res(f"{side}.mid.block_2", c, c)

    s.put("encoder.conv_in", ch, dd["in_channels"], 3, 3)
    res_now, cin = dd["resolution"], ch
    for i, m in enumerate(mult):
        for j in range(nrb):
            res(f"encoder.down.{i}.block.{j}", cin, ch * m)
            cin = ch * m
            if res_now in dd["attn_resolutions"]:
                attn(f"encoder.down.{i}.attn.{j}", cin)
        if i != len(mult) - 1:
            s.put(f"encoder.down.{i}.downsample.conv", cin, cin, 3, 3)
            res_now //= 2
    mid("encoder", cin)
    s.norm("encoder.norm_out", cin)
    s.put("encoder.conv_out", 2 * z if kl else z, cin, 3, 3)
    cin = ch * mult[-1]
    s.put("decoder.conv_in", cin, z, 3, 3)
    mid("decoder", cin)
    for i, m in list(enumerate(mult))[::-1]:
        for j in range(nrb + 1):
            res(f"decoder.up.{i}.block.{j}", cin, ch * m)
            cin = ch * m
            if res_now in dd["attn_resolutions"]:
                attn(f"decoder.up.{i}.attn.{j}", cin)
        if i:
            s.put(f"decoder.up.{i}.upsample.conv", cin, cin, 3, 3)
            res_now *= 2
    s.norm("decoder.norm_out", cin)
    s.put("decoder.conv_out", dd["out_ch"], cin, 3, 3)
    s.put("quant_conv", 2 * e if kl else e, 2 * z if kl else z, 1, 1)
    s.put("post_quant_conv", z, e, 1, 1)
    if not kl:
        s["quantize.embedding.weight"] = s.rand(p["n_embed"], e)
    return dict(s)


def schedule_buffers(p: dict) -> dict:
    """ddpm.register_schedule's buffers (float64 maths, stored float32)."""
    betas = torch.linspace(p["linear_start"] ** 0.5, p["linear_end"] ** 0.5, p["timesteps"], dtype=torch.float64) ** 2
    ac = torch.cumprod(1 - betas, 0)
    return {"betas": betas.float(), "alphas_cumprod": ac.float(),
            "alphas_cumprod_prev": torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]]).float(),
            "sqrt_alphas_cumprod": ac.sqrt().float()}


def ldm_sd(cfg: dict, ema=True) -> dict:
    p = cfg["model"]["params"]
    unet = openai_unet_sd(p["unet_config"]["params"])
    sd = {f"model.diffusion_model.{k}": v for k, v in unet.items()}
    if ema and p.get("use_ema", True):   # LitEma: the parameter names with their dots removed, and different values
        sd |= {"model_ema." + f"diffusion_model.{k}".replace(".", ""): v * 0.5 for k, v in unet.items()}
        sd |= {"model_ema.decay": torch.tensor(0.9999), "model_ema.num_updates": torch.tensor(7, dtype=torch.int)}
    fs = p["first_stage_config"]
    sd |= {f"first_stage_model.{k}": v
           for k, v in first_stage_sd(fs["params"], fs["target"].endswith("AutoencoderKL")).items()}
    cs, w = p["cond_stage_config"], Weights(2)
    w.sd = sd          # the cond-stage key writers of ldm_core.zoo.mirror_bert / mirror_concat add to it
    if is_bert(cs):                            # txt2img-large, text2img256, layout2img-openimages256
        bert_keys(w, p)
    elif not concat_cond_keys(w, p) and isinstance(cs, dict):   # concat: bsr_sr, inpainting_big, semantic_*
        sd["cond_stage_model.embedding.weight"] = torch.randn(cs["params"].get("n_classes", 1000),
                                                              cs["params"]["embed_dim"])
    if p.get("scale_by_std"):
        sd["scale_factor"] = torch.tensor(0.8)
    return sd | schedule_buffers(p)


def original(name: str, ema=True) -> tuple[dict, dict]:
    cfg = shrink(read_config(CONFIGS / f"{name}.yaml"))
    if ZOO[name].kind == "ldm":
        return cfg, ldm_sd(cfg, ema)
    m = cfg["model"]
    sd = first_stage_sd(m["params"], m["target"].endswith("AutoencoderKL"))
    sd["loss.logvar"] = torch.zeros(())      # training-only keys a first-stage checkpoint carries
    sd["loss.discriminator.main.0.weight"] = torch.zeros(4, 3, 4, 4)
    return cfg, sd


@contextmanager
def lightning_module():
    """pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint, as pickle will name it."""
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"]
    mods = {n: types.ModuleType(n) for n in names}
    cls = type("ModelCheckpoint", (), {"__module__": names[-1]})
    mods[names[-1]].ModelCheckpoint = cls
    saved = {n: sys.modules.get(n) for n in names}
    sys.modules.update(mods)
    try:
        yield cls
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def write_ckpt(path: Path, sd: dict) -> Path:
    """A PyTorch Lightning 1.4-shaped checkpoint around `sd`."""
    with lightning_module() as mc:
        torch.save({"epoch": 3, "global_step": 1000, "pytorch-lightning_version": "1.4.2", "state_dict": sd,
                    "callbacks": {mc: {"monitor": "val/loss", "best_model_score": torch.tensor(0.1),
                                       "current_score": np.float64(0.2), "dirpath": "/logs/checkpoints"}},
                    "optimizer_states": [], "lr_schedulers": []}, path)
    return path


# ------------------------------------------------------------------ reference forwards (original semantics)
def gn(x, sd, p, eps=1e-5):
    return F.group_norm(x, 32, sd[p + ".weight"], sd[p + ".bias"], eps)


def conv(x, sd, p, stride=1, padding=None):
    w = sd[p + ".weight"]
    return F.conv2d(x, w, sd[p + ".bias"], stride=stride, padding=w.shape[-1] // 2 if padding is None else padding)


def lin(x, sd, p):
    return F.linear(x, sd[p + ".weight"], sd.get(p + ".bias"))


def ref_resblock(x, emb, sd, p, scale_shift, up=False, down=False):
    """openaimodel.ResBlock: norm, SiLU, [resample h and x], conv; + emb (or scale-shift the norm)."""
    h = F.silu(gn(x, sd, f"{p}.in_layers.0"))
    if up:
        h, x = F.interpolate(h, scale_factor=2.0, mode="nearest"), F.interpolate(x, scale_factor=2.0, mode="nearest")
    if down:
        h, x = F.avg_pool2d(h, 2), F.avg_pool2d(x, 2)
    h = conv(h, sd, f"{p}.in_layers.2")
    e = lin(F.silu(emb), sd, f"{p}.emb_layers.1")[:, :, None, None]
    if scale_shift:
        scale, shift = e.chunk(2, dim=1)
        h = gn(h, sd, f"{p}.out_layers.0") * (1 + scale) + shift
    else:
        h = gn(h + e, sd, f"{p}.out_layers.0")
    h = conv(F.silu(h), sd, f"{p}.out_layers.3")
    return (conv(x, sd, f"{p}.skip_connection") if f"{p}.skip_connection.weight" in sd else x) + h


def ref_attention_block(x, sd, p, heads):
    """openaimodel.AttentionBlock with QKVAttentionLegacy: qkv split per head as (heads, 3*d)."""
    b, c, hh, ww = x.shape
    xf = x.reshape(b, c, -1)
    qkv = F.conv1d(gn(xf, sd, f"{p}.norm"), sd[f"{p}.qkv.weight"], sd[f"{p}.qkv.bias"])
    d = c // heads
    q, k, v = qkv.reshape(b * heads, 3 * d, -1).split(d, dim=1)
    w = (torch.einsum("bct,bcs->bts", q, k) / math.sqrt(d)).softmax(-1)
    a = torch.einsum("bts,bcs->bct", w, v).reshape(b, c, -1)
    return (xf + F.conv1d(a, sd[f"{p}.proj_out.weight"], sd[f"{p}.proj_out.bias"])).reshape(b, c, hh, ww)


def ref_cross(x, ctx, sd, p, heads):
    q, k, v = lin(x, sd, f"{p}.to_q"), lin(ctx, sd, f"{p}.to_k"), lin(ctx, sd, f"{p}.to_v")
    split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)   # noqa: E731
    a = F.scaled_dot_product_attention(split(q), split(k), split(v))
    return lin(a.transpose(1, 2).flatten(2), sd, f"{p}.to_out.0")


def ref_spatial(x, ctx, sd, p, heads, depth=1):
    """attention.SpatialTransformer: norm, proj_in, [self-attn, cross-attn, GEGLU FF], proj_out, + x."""
    b, c, hh, ww = x.shape
    h = conv(gn(x, sd, f"{p}.norm", eps=1e-6), sd, f"{p}.proj_in").flatten(2).transpose(1, 2)
    ln = lambda t, n: F.layer_norm(t, t.shape[-1:], sd[n + ".weight"], sd[n + ".bias"])   # noqa: E731
    for i in range(depth):
        q = f"{p}.transformer_blocks.{i}"
        h = h + ref_cross(ln(h, f"{q}.norm1"), ln(h, f"{q}.norm1"), sd, f"{q}.attn1", heads)
        h = h + ref_cross(ln(h, f"{q}.norm2"), ctx, sd, f"{q}.attn2", heads)
        a, g = lin(ln(h, f"{q}.norm3"), sd, f"{q}.ff.net.0.proj").chunk(2, dim=-1)
        h = h + lin(a * F.gelu(g), sd, f"{q}.ff.net.2")
    return x + conv(h.transpose(1, 2).reshape(b, c, hh, ww), sd, f"{p}.proj_out")


def ref_unet(x, t, sd, u, ctx=None):
    """openaimodel.UNetModel.forward from the original keys."""
    mc, mult, nrb, ares = u["model_channels"], u["channel_mult"], u["num_res_blocks"], u["attention_resolutions"]
    ss, updown = bool(u.get("use_scale_shift_norm")), bool(u.get("resblock_updown"))
    nh, nhc = u.get("num_heads", -1), u.get("num_head_channels", -1)

    def attn(h, p):
        heads = h.shape[1] // nhc if nhc != -1 else nh
        if u.get("use_spatial_transformer"):
            return ref_spatial(h, ctx, sd, p, heads, u.get("transformer_depth", 1))   # layout2img: depth 3
        return ref_attention_block(h, sd, p, heads)

    half = mc // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = lin(F.silu(lin(torch.cat([torch.cos(args), torch.sin(args)], -1), sd, "time_embed.0")), sd, "time_embed.2")
    h = conv(x, sd, "input_blocks.0.0")
    hs, ds, k = [h], 1, 1
    for level in range(len(mult)):
        for _ in range(nrb):
            h = ref_resblock(h, emb, sd, f"input_blocks.{k}.0", ss)
            if ds in ares:
                h = attn(h, f"input_blocks.{k}.1")
            hs.append(h)
            k += 1
        if level != len(mult) - 1:
            h = ref_resblock(h, emb, sd, f"input_blocks.{k}.0", ss, down=True) if updown else \
                conv(h, sd, f"input_blocks.{k}.0.op", stride=2)
            hs.append(h)
            ds, k = ds * 2, k + 1
    h = ref_resblock(h, emb, sd, "middle_block.0", ss)
    h = ref_resblock(attn(h, "middle_block.1"), emb, sd, "middle_block.2", ss)
    k = 0
    for level in reversed(range(len(mult))):
        for i in range(nrb + 1):
            h = ref_resblock(torch.cat([h, hs.pop()], 1), emb, sd, f"output_blocks.{k}.0", ss)
            n = 1
            if ds in ares:
                h, n = attn(h, f"output_blocks.{k}.1"), 2
            if level and i == nrb:
                h = ref_resblock(h, emb, sd, f"output_blocks.{k}.{n}", ss, up=True) if updown else \
                    conv(F.interpolate(h, scale_factor=2.0, mode="nearest"), sd, f"output_blocks.{k}.{n}.conv")
                ds //= 2
            k += 1
    return conv(F.silu(gn(h, sd, "out.0")), sd, "out.2")


def ref_vae_res(x, sd, p):
    """model.py ResnetBlock (no timestep embedding), GroupNorm eps 1e-6."""
    h = conv(F.silu(gn(x, sd, f"{p}.norm1", 1e-6)), sd, f"{p}.conv1")
    h = conv(F.silu(gn(h, sd, f"{p}.norm2", 1e-6)), sd, f"{p}.conv2")
    return (conv(x, sd, f"{p}.nin_shortcut") if f"{p}.nin_shortcut.weight" in sd else x) + h


def ref_vae_attn(x, sd, p):
    """model.py AttnBlock: one head over all channels, q/k/v/proj_out 1x1 convs."""
    if f"{p}.q.weight" not in sd:
        return x
    b, c, hh, ww = x.shape
    h = gn(x, sd, f"{p}.norm", 1e-6)
    q, k, v = (conv(h, sd, f"{p}.{n}").reshape(b, c, -1) for n in "qkv")
    w = (torch.bmm(q.transpose(1, 2), k) * c ** -0.5).softmax(dim=2)          # (b, T, T)
    return x + conv(torch.bmm(v, w.transpose(1, 2)).reshape(b, c, hh, ww), sd, f"{p}.proj_out")


def ref_encoder(x, sd, n, nrb):
    h = conv(x, sd, "encoder.conv_in")
    for i in range(n):
        for j in range(nrb):
            h = ref_vae_attn(ref_vae_res(h, sd, f"encoder.down.{i}.block.{j}"), sd, f"encoder.down.{i}.attn.{j}")
        if i != n - 1:   # Downsample: asymmetric pad, stride-2 conv without padding
            h = conv(F.pad(h, (0, 1, 0, 1)), sd, f"encoder.down.{i}.downsample.conv", stride=2, padding=0)
    h = ref_vae_res(ref_vae_attn(ref_vae_res(h, sd, "encoder.mid.block_1"), sd, "encoder.mid.attn_1"), sd,
                    "encoder.mid.block_2")
    return conv(F.silu(gn(h, sd, "encoder.norm_out", 1e-6)), sd, "encoder.conv_out")


def ref_decoder(z, sd, n, nrb):
    h = conv(z, sd, "decoder.conv_in")
    h = ref_vae_res(ref_vae_attn(ref_vae_res(h, sd, "decoder.mid.block_1"), sd, "decoder.mid.attn_1"), sd,
                    "decoder.mid.block_2")
    for i in reversed(range(n)):
        for j in range(nrb + 1):
            h = ref_vae_attn(ref_vae_res(h, sd, f"decoder.up.{i}.block.{j}"), sd, f"decoder.up.{i}.attn.{j}")
        if i:
            h = conv(F.interpolate(h, scale_factor=2.0, mode="nearest"), sd, f"decoder.up.{i}.upsample.conv")
    return conv(F.silu(gn(h, sd, "decoder.norm_out", 1e-6)), sd, "decoder.conv_out")


def close(a, b, tol=1e-5):
    torch.testing.assert_close(a, b, rtol=1e-4, atol=tol * max(1.0, b.abs().max().item()))


def unet_part(sd: dict) -> dict:
    return {k[len("model.diffusion_model."):]: v for k, v in sd.items() if k.startswith("model.diffusion_model.")}


# ------------------------------------------------------------------ tests: conversion
TEXT = ("txt2img-large", "text2img256")
# what each zoo LatentDiffusion becomes: its pipeline, and the classes of UNet and first stage
PIPELINES = {"cin256": "ClassConditionalPipeline", "cin256-v2": "ClassConditionalPipeline",
             "txt2img-large": "Text2ImgPipeline", "text2img256": "Text2ImgPipeline",
             "layout2img-openimages256": "PaperLayoutPipeline", "bsr_sr": "SuperResPipeline",
             "inpainting_big": "PaperInpaintPipeline", "semantic_synthesis256": "SemanticPipeline",
             "semantic_synthesis512": "SemanticPipeline"}
CROSS_ATTENTION = {"cin256", "cin256-v2", "layout2img-openimages256", *TEXT}   # SpatialTransformer UNets
HEADS_FIXED = {"lsun_churches256", "inpainting_big"}       # num_heads fixed while the widths vary


def expected_index(name: str) -> dict:
    """model_index.json's components (besides the scheduler) of a converted zoo LatentDiffusion."""
    unet = "UNet2DConditionModel" if name in CROSS_ATTENTION else \
        "LDMUNet2DModel" if name in HEADS_FIXED else "UNet2DModel"
    index = {"_class_name": PIPELINES.get(name, "UnconditionalPipeline"),
             "vae": ["diffusers", "AutoencoderKL" if name in ("lsun_churches256", "txt2img-large") else "VQModel"],
             "unet": ["ldm_core" if unet.startswith("LDM") else "diffusers", unet]}
    if name.startswith("cin"):
        index["class_embedder"] = ["ldm_core", "ClassEmbedder"]
    if name in CROSS_ATTENTION - {"cin256", "cin256-v2"}:
        index["text_encoder"] = ["diffusers", "LDMBertModel"]
    if name in TEXT:
        index["tokenizer"] = ["transformers", "BertTokenizer"]
    if name.startswith("semantic"):
        index["rescaler"] = ["ldm_core", "SpatialRescaler"]
    return index


def check_conditioning(name: str, conv, sd: dict, u: dict):
    """The converted conditioning stage; returns the UNet context its forward is checked with."""
    if name.startswith("cin"):
        labels = torch.tensor([1, 999])
        ctx = conv.class_embedder(labels)
        assert torch.equal(ctx[:, 0], sd["cond_stage_model.embedding.weight"][labels])
        assert conv.class_embedder.config.null_class == (1000 if name == "cin256-v2" else None)
        assert conv.class_embedder.name_of(1).startswith("goldfish")
        return ctx
    if conv.text_encoder is not None:       # BERTEmbedder: its token embedding, and a context of its width
        emb = sd["cond_stage_model.transformer.token_emb.weight"]
        assert torch.equal(conv.text_encoder.model.embed_tokens.weight, emb) and emb.shape[1] == u["context_dim"]
        assert (conv.tokenizer is None) == (name not in TEXT)
        return torch.randn(2, conv.text_encoder.config.max_position_embeddings, u["context_dim"])
    if conv.rescaler is not None:
        assert torch.equal(conv.rescaler.channel_mapper.weight, sd["cond_stage_model.channel_mapper.weight"])
    return None


@pytest.mark.parametrize("name", LDMS + STAGES)
def test_every_zoo_config_converts_strictly_and_reloads(name, tmp_path, request):
    if name in TEXT:       # their conversion reads bert-base-uncased's tokenizer from the (mirrored) hub cache
        request.getfixturevalue("hub_mirrors")
    cfg, sd = original(name)
    (tmp_path / "config.yaml").write_text(json.dumps(cfg))   # JSON is YAML
    out = convert_checkpoint(write_ckpt(tmp_path / "model.ckpt", sd), tmp_path / "config.yaml", name,
                             root=tmp_path / "zoo", ema=False)
    index = json.loads((out / "model_index.json").read_text())
    source = json.loads((out / "source.json").read_text())
    assert source["file"] == "model.ckpt" and len(source["sha256"]) == 64 and source["converter"] == 1
    assert not [p for p in (tmp_path / "zoo").iterdir() if p.name.startswith(".")]   # no temp folder left
    conv = convert_state_dict(sd, cfg, ema=False)     # the reference below runs model.diffusion_model.*
    p = cfg["model"]["params"]
    if ZOO[name].kind == "first_stage":
        assert index["_class_name"] == "FirstStage" and set(index) - {"_class_name", "_diffusers_version"} == {"vae"}
        assert index["vae"] == ["diffusers", "AutoencoderKL" if name.startswith("kl") else "VQModel"]
        return
    assert index.pop("scheduler") == ["diffusers", "DDIMScheduler"] and index.pop("_diffusers_version")
    assert index == expected_index(name)
    # the saved folder reloads to the same weights (heads included: LDMUNet2DModel keeps them in its config)
    import diffusers
    unet_cls = index["unet"][1]
    cls = LDMUNet2DModel if unet_cls == "LDMUNet2DModel" else getattr(diffusers, unet_cls)
    unet = cls.from_pretrained(out / "unet")
    for k, v in conv.unet.state_dict().items():
        assert torch.equal(unet.state_dict()[k], v), k
    # the schedule is the checkpoint's
    torch.testing.assert_close(conv.scheduler.alphas_cumprod, sd["alphas_cumprod"], rtol=1e-5, atol=1e-7)
    # the UNet computes what the original computes (concat models: latent and conditioning channels)
    u = p["unet_config"]["params"]
    side = 2 ** (len(u["channel_mult"]) - 1)
    x, t = torch.randn(2, u["in_channels"], side, side), torch.tensor([10, 900])
    with torch.no_grad():
        ctx = check_conditioning(name, conv, sd, u)
        kw = {"encoder_hidden_states": ctx} if name in CROSS_ATTENTION else {}
        close(unet(x, t, **kw).sample, ref_unet(x, t, unet_part(sd), u, ctx))
    if name == "lsun_churches256":
        assert conv.vae.config.scaling_factor == pytest.approx(0.8)   # the scale_by_std buffer
        assert unet.config.attention_heads == [8] * 6


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", LDMS + STAGES)
def test_full_size_configs_map_every_key(name, monkeypatch):
    """The vendored configs at their real sizes (shapes only, on the meta device): every original
    key renamed, every parameter given, every shape equal; parameter counts as published."""
    from ldm_core.zoo.convert import convert_first_stage, convert_unet
    monkeypatch.setattr(_Keys, "meta", True)
    m = read_config(CONFIGS / f"{name}.yaml")["model"]
    p = m["params"]
    with torch.device("meta"):
        if ZOO[name].kind == "first_stage":
            vae = convert_first_stage(first_stage_sd(p, m["target"].endswith("AutoencoderKL")), m)
            assert vae.config.scaling_factor == 1.0
            return
        original_unet = openai_unet_sd(p["unet_config"]["params"])
        unet = convert_unet(original_unet, unet_node(p["unet_config"]))   # txt2img-large: legacy False
        fs = p["first_stage_config"]
        convert_first_stage(first_stage_sd(fs["params"], fs["target"].endswith("AutoencoderKL")), fs)
    count = sum(t.numel() for t in unet.parameters())
    assert count == sum(t.numel() for t in original_unet.values())
    # CelebA/FFHQ/Bedrooms LDM-4 274M, Churches LDM-8 295M, cin LDM-8 395M, cin-v2 LDM-4 401M; txt2img-large
    # 872M (the hub copy's unet: 3.49 GB fp32), bsr_sr 114M (the hub copy's fp16 unet: 227 MB), inpainting_big
    # 387M, text2img256 404M, layout2img 246M, semantic_synthesis 215M: UNets only
    assert round(count / 1e6) == {"lsun_churches256": 295, "cin256": 395, "cin256-v2": 401, "txt2img-large": 872,
                                  "text2img256": 404, "layout2img-openimages256": 246, "bsr_sr": 114,
                                  "inpainting_big": 387, "semantic_synthesis256": 215,
                                  "semantic_synthesis512": 215}.get(name, 274)


def test_attention_block_heads_and_resblock_scale_shift():
    """Module level: legacy qkv split with several heads; scale-shift ResBlocks with down/up."""
    cfg, sd = original("lsun_churches256")
    u, usd = cfg["model"]["params"]["unet_config"]["params"], unet_part(sd)
    unet = convert_state_dict(sd, cfg, ema=False).unet
    x, emb = torch.randn(2, 64, 4, 4), torch.randn(2, 128)
    with torch.no_grad():
        # input_blocks.3.1: level 1 (64 channels), 8 heads of 8 channels, not 64 / 32 = 2 heads
        close(unet.down_blocks[1].attentions[0](x), ref_attention_block(x, usd, "input_blocks.4.1", 8))
        assert unet.down_blocks[1].attentions[0].heads == 8
        close(unet.down_blocks[1].resnets[1](x, emb), ref_resblock(x, emb, usd, "input_blocks.5.0", True))
        close(unet.down_blocks[1].downsamplers[0](x, emb),
              ref_resblock(x, emb, usd, "input_blocks.6.0", True, down=True))
        close(unet.up_blocks[3].upsamplers[0](x, emb), ref_resblock(x, emb, usd, "output_blocks.11.2", True, up=True))
    assert u["num_heads"] == 8


@pytest.mark.parametrize("name", ["kl-f32", "vq-f8", "vq-f4-noattn"])
def test_first_stage_computes_the_original(name):
    """kl-f32: attention at two levels of equal width (a swap would pass the shape checks)."""
    cfg, sd = original(name)
    dd = cfg["model"]["params"]["ddconfig"]
    vae = convert_state_dict(sd, cfg).vae
    n, nrb = len(dd["ch_mult"]), dd["num_res_blocks"]
    x = torch.randn(1, 3, 2 ** (n - 1) * 2, 2 ** (n - 1) * 2)
    z = torch.randn(1, dd["z_channels"], 2, 2)
    with torch.no_grad():
        close(vae.encoder(x), ref_encoder(x, sd, n, nrb))
        close(vae.decoder(z), ref_decoder(z, sd, n, nrb))
        close(vae.quant_conv(vae.encoder(x)), conv(ref_encoder(x, sd, n, nrb), sd, "quant_conv"))
    if name.startswith("vq"):
        assert torch.equal(vae.quantize.embedding.weight, sd["quantize.embedding.weight"])
        assert vae.config.scaling_factor == 1.0
    assert vae.config.mid_block_add_attention == (name != "vq-f4-noattn")


def test_kl_first_stage_equals_diffusers_converter():
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    cfg, sd = original("kl-f8")       # no attention in the levels: diffusers' converter applies
    vae = convert_state_dict(sd, cfg).vae
    theirs = convert_ldm_vae_checkpoint({f"first_stage_model.{k}": v for k, v in sd.items()}, dict(vae.config))
    ours = vae.state_dict()
    assert set(theirs) == set(ours)
    for k in ours:
        assert torch.equal(ours[k], theirs[k].reshape(ours[k].shape)), k


def test_ema_choice(tmp_path):
    cfg, sd = original("celeba256")
    raw, ema = convert_state_dict(sd, cfg, ema=False).unet, convert_state_dict(sd, cfg, ema=True).unet
    w = sd["model.diffusion_model.input_blocks.0.0.weight"]
    assert torch.equal(raw.conv_in.weight, w) and torch.equal(ema.conv_in.weight, w * 0.5)
    # by default, what CompVis' scripts sample with (inside model.ema_scope()): the EMA copy when there is one
    auto = convert_state_dict(sd, cfg)
    assert auto.ema and torch.equal(auto.unet.conv_in.weight, w * 0.5)
    assert not convert_state_dict(ldm_sd(cfg, ema=False), cfg).ema
    cfg["model"]["params"]["use_ema"] = False      # cin256-v2's config: the scripts run the model's own weights
    assert not convert_state_dict(sd, cfg).ema
    with pytest.raises(ConversionError, match="no EMA"):
        convert_state_dict(ldm_sd(cfg, ema=False), cfg, ema=True)


@pytest.mark.parametrize("case", ["extra key", "missing key", "shape", "schedule", "vq scale", "conditioning",
                                  "concat conditioning", "target"])
def test_refusals(case):
    cfg, sd = original("celeba256")
    p = cfg["model"]["params"]
    clip = "ldm.modules.encoders.modules.FrozenCLIPEmbedder"    # a conditioning stage no zoo model has
    match = {"extra key": "model.diffusion_model.bogus", "missing key": "missing",
             "shape": "shape mismatches", "schedule": "betas", "vq scale": "scale_factor",
             "conditioning": f"conditioning_key 'crossattn' with cond_stage_config '{clip}' is not supported",
             "concat conditioning": f"concat conditioning with cond_stage_config '{clip}' .* not supported",
             "target": "unet_config.target"}[case]
    if case == "extra key":
        sd["model.diffusion_model.bogus.weight"] = torch.zeros(1)
        match = "does not know"
    elif case == "missing key":
        del sd["model.diffusion_model.out.2.bias"]
    elif case == "shape":
        sd["model.diffusion_model.out.2.bias"] = torch.zeros(5)
    elif case == "schedule":
        p["linear_end"] = 0.0155
    elif case == "vq scale":
        p["scale_factor"] = 0.5
    elif case in ("conditioning", "concat conditioning"):    # celeba256: concat_mode false, so crossattn
        p["cond_stage_config"] = {"target": clip}
        p["concat_mode"] = case.startswith("concat")
    else:
        p["unet_config"]["target"] = "os.system"
    with pytest.raises(ConversionError, match=match):
        convert_state_dict(sd, cfg, ema=False)


def test_reconversion_replaces_the_folder_whole(tmp_path):
    cfg, sd = original("kl-f4")
    (tmp_path / "c.yaml").write_text(json.dumps(cfg))
    ckpt = write_ckpt(tmp_path / "a.ckpt", sd)
    first = convert_checkpoint(ckpt, tmp_path / "c.yaml", "mine", root=tmp_path / "zoo")
    (first / "stale.txt").write_text("from the first conversion")
    sd["decoder.conv_out.bias"] = sd["decoder.conv_out.bias"] + 1
    second = convert_checkpoint(write_ckpt(tmp_path / "b.ckpt", sd), tmp_path / "c.yaml", "mine", root=tmp_path / "zoo")
    assert second == first and not (second / "stale.txt").exists()
    assert json.loads((second / "source.json").read_text())["file"] == "b.ckpt"
    assert sorted(p.name for p in (tmp_path / "zoo").iterdir()) == ["mine"]
    with pytest.raises(ConversionError, match="folder name"):
        convert_checkpoint(ckpt, tmp_path / "c.yaml", "../escape", root=tmp_path / "zoo")


# ------------------------------------------------------------------ tests: safe reading
def test_lightning_checkpoint_reads_without_lightning(tmp_path):
    sd = {"a.weight": torch.ones(2)}
    got = read_state_dict(write_ckpt(tmp_path / "m.ckpt", sd))
    assert list(got) == ["a.weight"] and torch.equal(got["a.weight"], sd["a.weight"])
    assert "pytorch_lightning" not in sys.modules
    assert ModelCheckpointStub.__module__ == "ldm_core.zoo.safe_load"
    torch.save(sd, tmp_path / "bare.pt")
    assert list(read_state_dict(tmp_path / "bare.pt")) == ["a.weight"]
    torch.save(sd, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert list(read_state_dict(tmp_path / "legacy.pt")) == ["a.weight"]


class _Trap:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))   # what torch.load(weights_only=False) would run


@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_pickle_refused_before_running(tmp_path, legacy):
    marker = tmp_path / "opened"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"a": torch.ones(1)}, "x": _Trap(marker)}, path,
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(CheckpointRefused, match=r"(posix|nt|os)\.system.*nothing of it was run"):
        read_state_dict(path)
    assert not marker.exists()
    with pytest.raises(CheckpointRefused):
        convert_checkpoint(path, CONFIGS / "celeba256.yaml", "evil", root=tmp_path / "zoo")
    assert not marker.exists() and not (tmp_path / "zoo" / "evil").exists()


def test_unknown_global_named(tmp_path):
    import argparse
    torch.save({"state_dict": {"a": torch.ones(1)}, "args": argparse.Namespace(lr=1)}, tmp_path / "m.ckpt")
    with pytest.raises(CheckpointRefused, match="argparse.Namespace"):
        read_state_dict(tmp_path / "m.ckpt")


def test_not_checkpoints(tmp_path):
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    torch.save({"state_dict": {"a": torch.ones(1), "b": 3}}, tmp_path / "nt.ckpt")
    torch.save({"epoch": 3, "step": torch.ones(1)}, tmp_path / "nosd.ckpt")
    for name, match in (("junk.ckpt", "not a PyTorch checkpoint"), ("nt.ckpt", "non-tensor"),
                        ("nosd.ckpt", "no state_dict"), ("missing.ckpt", "not a file")):
        with pytest.raises(CheckpointRefused, match=match):
            read_state_dict(tmp_path / name)


# ------------------------------------------------------------------ tests: download
def test_download_from_file_mirror(tmp_path, monkeypatch):
    import ldm_core.zoo as zoo
    from ldm_core.zoo.download import download
    cfg, sd = original("vq-f4")
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "vq-f4.yaml").write_text(json.dumps(cfg))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    write_ckpt(tmp_path / "model.ckpt", sd)
    with zipfile.ZipFile(mirror / "vq-f4.zip", "w") as zf:
        zf.write(tmp_path / "model.ckpt", "model.ckpt")
        zf.writestr("../../escape.txt", "never extracted")
    downloads = tmp_path / "zoo" / "downloads"      # an interrupted earlier run left a part
    downloads.mkdir(parents=True)
    (downloads / "vq-f4.zip.part").write_bytes((mirror / "vq-f4.zip").read_bytes()[:1000])
    monkeypatch.setattr(zoo, "CONFIGS", configs)
    monkeypatch.setenv("LDM_ZOO_URL", mirror.as_uri())
    monkeypatch.setenv("LDM_ZOO_DIR", str(tmp_path / "zoo"))
    said = []
    out = download("vq-f4", progress=said.append)
    assert out == tmp_path / "zoo" / "vq-f4" and zoo.converted("vq-f4") == out
    assert "GB" in said[0] and any("resuming" in m for m in said)
    source = json.loads((out / "source.json").read_text())
    assert source["url"].startswith("file://") and len(source["download_sha256"]) == 64
    assert list((tmp_path / "zoo" / "downloads").iterdir()) == []   # archive removed after conversion
    assert not (tmp_path / "escape.txt").exists()
    (mirror / "vq-f4.zip").unlink()                                  # converted: no network, no mirror needed
    assert download("vq-f4", progress=said.append) == out
