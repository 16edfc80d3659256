"""The paper's concat-conditioned zoo models (bsr_sr, inpainting_big, semantic_synthesis256/512):
which studio pipeline runs each, what their conditioning stage becomes, and checks that the UNet's
input width is the latent's plus the conditioning's.

Facts are from CompVis/latent-diffusion@a506df5 (read, not copied):
  ldm/models/diffusion/ddpm.py   LatentDiffusion: conditioning_key None -> "concat" when concat_mode
      (the default); DiffusionWrapper "concat": UNet input = cat([x] + c_concat, dim=1), the noisy
      latent FIRST, then the conditioning; instantiate_cond_stage: "__is_first_stage__" makes
      cond_stage_model the first-stage module itself, so a saved state dict holds its weights
      twice (first_stage_model.* and cond_stage_model.*); a torch.nn.Identity stage has no weights.
  models/ldm/bsr_sr/config.yaml  cond_stage_key LR_image, cond stage torch.nn.Identity: the
      low-resolution image itself, in [-1, 1] (notebook_helpers.py get_cond: c = 2 * ToTensor(img) - 1),
      is concatenated: in_channels 6 = 3 latent + 3 RGB. The hub's
      CompVis/ldm-super-resolution-4x-openimages is this model in diffusers' layout (VQModel,
      UNet2DModel, DDIM), which ldm_core's SuperResPipeline runs.
  models/ldm/inpainting_big/config.yaml + scripts/inpaint.py  cond_stage_key masked_image, cond stage
      "__is_first_stage__": c = first stage encode (pre-quantisation) of the masked image, then the
      mask resized to the latent grid appended: in_channels 7 = 3 latent + 3 masked-image latent + 1.
  models/ldm/semantic_synthesis{256,512}/config.yaml + ldm/modules/encoders/modules.py  cond stage
      SpatialRescaler(n_stages 2, in_channels 182, out_channels 3; method bilinear, multiplier 0.5,
      bias False by default): `channel_mapper.weight` (3, 182, 1, 1); in_channels 6 = 3 + 3.
The 182 labels are COCO-Stuff's (ldm_core/zoo/cocostuff_labels.txt, its source in its header).
"""
from __future__ import annotations

import colorsys
from functools import lru_cache
from pathlib import Path

import torch

from ..pipelines.spatial_rescaler import SpatialRescaler
from .rename import ConversionError, load_strict, need

IDENTITY = "torch.nn.Identity"
RESCALER = "ldm.modules.encoders.modules.SpatialRescaler"
FIRST_STAGE = "__is_first_stage__"
CONCAT_PIPELINES = ("SuperResPipeline", "PaperInpaintPipeline", "SemanticPipeline")
COCOSTUFF_CLASSES = 182


@lru_cache(maxsize=1)
def cocostuff_labels() -> tuple[str, ...]:
    """COCO-Stuff's 182 labels in label-id order (channel k of the one-hot map = pixel value k)."""
    lines = (Path(__file__).resolve().parent / "cocostuff_labels.txt").read_text().splitlines()
    names = tuple(line.strip() for line in lines if line.strip() and not line.startswith("#"))
    if len(names) != COCOSTUFF_CLASSES:
        raise ValueError(f"cocostuff_labels.txt has {len(names)} labels, not {COCOSTUFF_CLASSES}")
    return names


def label_palette(n: int) -> list[list[int]]:
    """n distinct RGB colours, deterministic: hues stepped by the golden ratio (so neighbouring ids
    differ), lightness and saturation cycling over 3 levels. Not COCO-Stuff's own colour map (none
    is published as data beside its labels); what matters is that each class has its own colour."""
    out, seen = [], set()
    for k in range(n):
        h = (k * 0.6180339887498949) % 1.0
        s, v = (0.85, 0.65, 0.45)[k % 3], (0.95, 0.75, 0.55)[(k // 3) % 3]
        rgb = [round(c * 255) for c in colorsys.hsv_to_rgb(h, s, v)]
        while tuple(rgb) in seen:          # never two classes in one colour
            rgb[k % 3] = (rgb[k % 3] + 1) % 256
        seen.add(tuple(rgb))
        out.append(rgb)
    return out


def concat_pipeline(p: dict) -> str:
    """The studio pipeline of a concat-conditioned LatentDiffusion (its `model.params`)."""
    cs, key = p.get("cond_stage_config"), p.get("cond_stage_key")
    target = cs.get("target") if isinstance(cs, dict) else cs
    if target == FIRST_STAGE and key == "masked_image":
        return "PaperInpaintPipeline"
    if target == IDENTITY and key == "LR_image":
        return "SuperResPipeline"
    if target == RESCALER:
        return "SemanticPipeline"
    raise ConversionError(f"concat conditioning with cond_stage_config {target!r} and cond_stage_key {key!r} is "
                          f"not supported (only bsr_sr's LR_image, inpainting_big's masked_image and "
                          f"SpatialRescaler segmentation maps)")


def _concat_channels(pipeline: str, p: dict) -> int:
    """Channels the conditioning adds after the latent (DiffusionWrapper: cat([x] + c_concat))."""
    if pipeline == "SuperResPipeline":
        return 3                                                   # the RGB low-resolution image
    if pipeline == "PaperInpaintPipeline":
        first = need(p, "first_stage_config", "model.params").get("params") or {}
        return need(first, "embed_dim", "first_stage_config") + 1   # masked-image latent + mask
    out = (p["cond_stage_config"].get("params") or {}).get("out_channels")
    if out is None:
        raise ConversionError("SpatialRescaler without out_channels (no channel_mapper) is not supported")
    return out


def _check_widths(pipeline: str, p: dict) -> None:
    unet = need(p, "unet_config", "model.params").get("params") or {}
    first = need(p, "first_stage_config", "model.params").get("params") or {}
    z = need(first, "embed_dim", "first_stage_config")
    want = z + _concat_channels(pipeline, p)
    if (unet.get("in_channels"), unet.get("out_channels")) != (want, z):
        raise ConversionError(f"unet_config in/out_channels {unet.get('in_channels')}/{unet.get('out_channels')}: "
                              f"a {pipeline} UNet takes {want} (latent {z} + conditioning) and gives {z}")


def _rescaler(cond_sd: dict, cs: dict) -> SpatialRescaler:
    """cond_stage_model.* of a SpatialRescaler (channel_mapper.weight[, .bias]) -> ldm_core's SpatialRescaler."""
    cp = cs.get("params") or {}
    n_in, bias = cp.get("in_channels", 3), cp.get("bias", False)
    names = list(cocostuff_labels()) if n_in == COCOSTUFF_CLASSES else None
    try:
        rescaler = SpatialRescaler(n_stages=cp.get("n_stages", 1), method=cp.get("method", "bilinear"),
                                   multiplier=cp.get("multiplier", 0.5), in_channels=n_in,
                                   out_channels=cp.get("out_channels"), bias=bias, class_names=names,
                                   palette=label_palette(n_in))
    except ValueError as e:
        raise ConversionError(f"cond_stage_config SpatialRescaler: {e}") from None
    sd = {k: cond_sd.pop(k) for k in list(cond_sd) if k.startswith("channel_mapper.")}
    return load_strict(rescaler, sd, list(cond_sd), "cond_stage_model (SpatialRescaler)")


def _same_first_stage(cond_sd: dict, first_sd: dict) -> None:
    """"__is_first_stage__": cond_stage_model.* is the first stage saved a second time; it must be
    exactly that (or absent), never weights of its own."""
    cond = {k: v for k, v in cond_sd.items() if not k.startswith("loss.")}
    if not cond:
        return
    if set(cond) != set(first_sd):
        odd = sorted(set(cond) ^ set(first_sd))[:4]
        raise ConversionError(f"cond_stage_model is the first stage (__is_first_stage__) but its keys differ: {odd}")
    bad = [k for k in cond if cond[k].shape != first_sd[k].shape or not torch.equal(cond[k], first_sd[k])]
    if bad:
        raise ConversionError(f"cond_stage_model is the first stage (__is_first_stage__) but {bad[:4]} differ from "
                              f"first_stage_model's")


def concat_components(pipeline: str, cond_sd: dict, first_sd: dict, p: dict) -> dict:
    """The components a concat pipeline adds ({"rescaler": ...} or none), from `cond_sd`
    (cond_stage_model.*, prefix removed; emptied here) and `first_sd` (first_stage_model.*)."""
    _check_widths(pipeline, p)
    out = {}
    if pipeline == "SemanticPipeline":
        out["rescaler"] = _rescaler(cond_sd, p["cond_stage_config"])
    elif pipeline == "PaperInpaintPipeline":
        _same_first_stage(cond_sd, first_sd)
    elif cond_sd:
        raise ConversionError(f"a torch.nn.Identity conditioning stage with weights {list(cond_sd)[:4]}")
    cond_sd.clear()
    return out
