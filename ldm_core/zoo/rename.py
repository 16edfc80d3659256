"""The converter's renaming machinery: original key prefixes -> diffusers names, then a strict load.

Key names and semantics are those of CompVis/latent-diffusion@a506df5 (read, not copied):
  ldm/modules/diffusionmodules/openaimodel.py  ResBlock, AttentionBlock (legacy QKV)
  ldm/modules/diffusionmodules/model.py        first-stage ResnetBlock / AttnBlock
A table {source module prefix: (diffusers prefix, tensor fn)} is built from the config by
ldm_core.zoo.unet / ldm_core.zoo.first_stage; a key it does not know, a missing key or a shape
mismatch refuses the whole conversion (ConversionError naming it).
"""
from __future__ import annotations

import torch


class ConversionError(ValueError):
    """The checkpoint/config pair cannot be converted faithfully; nothing was written."""


def flat(t: torch.Tensor) -> torch.Tensor:
    """A 1x1 conv weight (C, C, 1[, 1]) -> the linear weight (C, C) diffusers' Attention holds."""
    return t.flatten(1) if t.ndim > 2 and t.shape[2:].numel() == 1 else t


def add_resblock(table: dict, src: str, dst: str, openai: bool) -> None:
    pairs = ((("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("emb_layers.1", "time_emb_proj"),
              ("out_layers.0", "norm2"), ("out_layers.3", "conv2"), ("skip_connection", "conv_shortcut"))
             if openai else  # model.py ResnetBlock (no temb in the first stage)
             (("norm1", "norm1"), ("conv1", "conv1"), ("norm2", "norm2"), ("conv2", "conv2"),
              ("nin_shortcut", "conv_shortcut")))
    for a, b in pairs:
        table[f"{src}.{a}"] = (f"{dst}.{b}", None)


def add_attnblock(table: dict, src: str, dst: str) -> None:
    """model.py AttnBlock (one head; q, k, v, proj_out are 1x1 convs) -> diffusers Attention."""
    for a, b in (("norm", "group_norm"), ("q", "to_q"), ("k", "to_k"), ("v", "to_v"), ("proj_out", "to_out.0")):
        table[f"{src}.{a}"] = (f"{dst}.{b}", flat)


def split_qkv(t: torch.Tensor, heads: int) -> tuple[torch.Tensor, ...]:
    """openaimodel AttentionBlock.qkv (conv1d C -> 3C) under QKVAttentionLegacy: the 3C outputs
    are (heads, 3, C/heads): each head's q, k, v lie together. -> to_q, to_k, to_v, each (C, ...)."""
    c3 = t.shape[0]
    w = t.reshape(heads, 3, c3 // (3 * heads), *t.shape[1:])        # (H, 3, d, C[, 1]) or (H, 3, d)
    return tuple(flat(w[:, i].reshape(c3 // 3, *t.shape[1:])) for i in range(3))


def remap(sd: dict, table: dict, qkv: dict) -> tuple[dict, list[str]]:
    """Rename by the longest module prefix in `table` ({src: (dst, fn)}); `qkv` {src module: (dst, heads)}."""
    out, left = {}, []
    for key, t in sd.items():
        mod, _, param = key.rpartition(".")
        if mod in qkv:
            dst, heads = qkv[mod]
            for name, part in zip(("to_q", "to_k", "to_v"), split_qkv(t, heads)):
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


def load_strict(model: torch.nn.Module, sd: dict, left: list[str], where: str) -> torch.nn.Module:
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


def need(p: dict, key: str, where: str):
    """`p[key]`, or a ConversionError saying the config lacks it."""
    if key not in p:
        raise ConversionError(f"{where}: config has no {key}")
    return p[key]
