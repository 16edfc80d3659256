"""Offline stand-ins for the paper's concat-conditioned checkpoints, and diffusers weights written
back into the ORIGINAL layout (tools; tests and ldm_core.eval.zoo_vs_hub_sr).

Facts are from CompVis/latent-diffusion@a506df5 (read, not copied):
  - ldm/models/diffusion/ddpm.py instantiate_cond_stage: "__is_first_stage__" registers the first
    stage module a second time as `cond_stage_model` (nn.Module.state_dict does not deduplicate:
    its weights are saved under both prefixes); torch.nn.Identity has no weights;
  - ldm/modules/encoders/modules.py SpatialRescaler: `channel_mapper` = Conv2d(in, out, 1, bias=bias).
  - scripts/download_models.sh unzips inpainting_big.zip into models/ldm/inpainting_big/, and
    scripts/inpaint.py reads models/ldm/inpainting_big/last.ckpt (README's "Inpainting" section
    downloads that file from heibox directly). Users found that the .zip is no zip of a .ckpt but the
    checkpoint itself (torch's zip format): CompVis/stable-diffusion#208 (`wget -O .../last.ckpt
    .../inpainting_big.zip` works), omriav/blended-latent-diffusion#11, microsoft/ReCo#9. So ZOO says
    member "" and the mirror writes the bare checkpoint under that name (not checked against the file).

`original_from_diffusers(unet, vae, config)` is the inverse of ldm_core.zoo.unet / first_stage's
renaming: a diffusers UNet2DModel / VQModel's weights under openaimodel.py / model.py key names,
as a LatentDiffusion state dict (with its schedule buffers) for `config`. Being the inverse of our
own table, it cannot find an error in that table; tests check what it writes against the
independent original forward of tests/zoo_reference.py.
"""
from __future__ import annotations

import torch

from .first_stage import _first_stage_table
from .mirror_keys import Weights
from .rename import flat
from .unet import _levels, _unet_table

FIRST_STAGE = "__is_first_stage__"


def concat_cond_keys(w: Weights, params: dict) -> bool:
    """Add the cond_stage_model.* keys of a concat-conditioned LatentDiffusion (`params`) to `w.sd`,
    after its first stage; False when its conditioning stage is not one of these."""
    cond = params.get("cond_stage_config")
    if cond == FIRST_STAGE:                                   # the first stage, saved again
        for k in [k for k in w.sd if k.startswith("first_stage_model.")]:
            w.sd["cond_stage_model." + k[len("first_stage_model."):]] = w.sd[k].clone()
        return True
    target = cond.get("target") if isinstance(cond, dict) else None
    if target == "torch.nn.Identity":
        return True
    if target == "ldm.modules.encoders.modules.SpatialRescaler":
        p = cond.get("params") or {}
        w.conv("cond_stage_model.channel_mapper", p.get("in_channels", 3), p["out_channels"], 1,
               bias=p.get("bias", False))
        return True
    return False


def _inverse(diffusers_sd: dict, template: dict, table: dict, qkv: dict, prefix: str) -> dict:
    """Original key -> tensor for every key of `template` (original names under `prefix`, original
    shapes), taken from `diffusers_sd` through the forward renaming `table` / `qkv` splits."""
    out = {}
    for key, like in template.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        mod, _, param = name.rpartition(".")
        if mod in qkv:                        # QKVAttentionLegacy: (heads, 3, d) interleaved
            dst, heads = qkv[mod]
            q, k, v = (diffusers_sd[f"{dst}.to_{n}.{param}"] for n in "qkv")
            parts = [t.reshape(heads, t.shape[0] // heads, *t.shape[1:]) for t in (q, k, v)]
            out[key] = torch.stack(parts, 1).reshape(like.shape)
            continue
        parts = name.split(".")
        for i in range(len(parts) - 1, 0, -1):
            pre = ".".join(parts[:i])
            if pre in table:
                t = diffusers_sd[table[pre][0] + name[len(pre):]]
                out[key] = t.reshape(like.shape) if table[pre][1] is flat else t
                break
        else:
            raise KeyError(f"{key}: no diffusers name for it")
        if out[key].shape != like.shape:
            raise ValueError(f"{key}: {tuple(out[key].shape)} != the original's {tuple(like.shape)}")
    return out


def original_from_diffusers(unet: torch.nn.Module, vae: torch.nn.Module, config: dict,
                            template: dict) -> dict[str, torch.Tensor]:
    """A LatentDiffusion state dict in the original layout for `config` (a LatentDiffusion config
    with a VQ first stage and an AttentionBlock UNet), holding `unet`'s and `vae`'s weights.
    `template`: the original keys and shapes for that config (ldm_core.zoo.mirror.original_state_dict):
    its schedule buffers and conditioning-stage weights are kept; no EMA copy is written."""
    p = config["model"]["params"]
    table, qkv = _unet_table(_levels(p["unet_config"]["params"]))
    sd = {k: v for k, v in template.items() if not k.startswith(("model.", "model_ema.", "first_stage_model."))}
    sd.update(_inverse(unet.state_dict(), template, table, qkv, "model.diffusion_model."))
    dd = p["first_stage_config"]["params"]["ddconfig"]
    fs_table = _first_stage_table(len(dd["ch_mult"]), dd["num_res_blocks"])
    fs_table["quantize.embedding"] = ("quantize.embedding", None)
    sd.update(_inverse(vae.state_dict(), template, fs_table, {}, "first_stage_model."))
    if p.get("cond_stage_config") == FIRST_STAGE:             # the shared module's second copy
        sd.update({"cond_stage_model." + k[len("first_stage_model."):]: v for k, v in sd.items()
                   if k.startswith("first_stage_model.")})
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}
