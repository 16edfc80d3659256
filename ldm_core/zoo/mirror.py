"""Offline mirrors of the paper's original CompVis checkpoints, for tests: the published file
layout (`celeba.zip` holding `model.ckpt`, the bare `nitro/cin/model.ckpt`, `kl-f8.zip`, ...),
Lightning 1.4 `.ckpt` pickles with the original key names, shapes and extra state, and the
real vendored configs with only their widths shrunk; seeded random weights.

Facts are from CompVis/latent-diffusion@a506df5 (abbreviated "@a506df5" below):
  - key names and shapes: ldm/modules/diffusionmodules/openaimodel.py (UNetModel, ResBlock,
    AttentionBlock, Downsample, Upsample), ldm/modules/attention.py (SpatialTransformer,
    BasicTransformerBlock, CrossAttention, FeedForward/GEGLU), ldm/modules/diffusionmodules/model.py
    (Encoder, Decoder, ResnetBlock, AttnBlock, make_attn), ldm/models/autoencoder.py (VQModel,
    AutoencoderKL: quant_conv, post_quant_conv, loss), ldm/modules/encoders/modules.py
    (ClassEmbedder), ldm/modules/ema.py (LitEma: `decay`, `num_updates`, dot-less names);
    taming-transformers' VectorQuantizer2 (`quantize.embedding.weight`);
  - the buffers of a LatentDiffusion: ldm/models/diffusion/ddpm.py (DDPM.register_schedule;
    `scale_factor` a buffer only when `scale_by_std`; `lvlb_weights` not persistent) and
    ldm/modules/diffusionmodules/util.py (make_beta_schedule).

`write_mirror(folder, names)` then `LDM_ZOO_URL=file://<folder>/` makes `download()` run offline;
it converts with `ZOO[name].config`, the vendored real config, so point `ldm_core.zoo.CONFIGS` at
`write_configs(other_folder, names)` (the shrunk ones) for the widths to match.

The walk over the original modules' keys and shapes is ldm_core.zoo.mirror_keys'.
"""
from __future__ import annotations

import contextlib
import io
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import yaml

from . import ZOO
from .mirror_bert import bert_keys, is_bert, shrink_bert
from .mirror_concat import concat_cond_keys
from .mirror_keys import Weights, first_stage_keys, unet_keys

# ------------------------------------------------------------------ configs
WIDTH = 32          # UNet model_channels, first-stage ch (GroupNorm has 32 groups: widths stay multiples of 32)
HEAD_CHANNELS = 8   # UNet num_head_channels, where a config sets it
CONTEXT = 32        # UNet context_dim and ClassEmbedder embed_dim
CODEBOOK = 64       # VQ n_embed (at most)


def shrunk_config(name: str) -> dict:
    """The vendored real config of a zoo model (`configs/<name>.yaml`, verbatim from
    models/ldm/<name>/config.yaml, models/first_stage_models/<name>/config.yaml or
    configs/latent-diffusion/cin256-v2.yaml @a506df5) with only its widths shrunk. Everything
    else is kept: channel_mult, attention_resolutions, num_res_blocks, num_heads,
    use_scale_shift_norm, resblock_updown, use_spatial_transformer, transformer_depth, z_channels,
    embed_dim, double_z, attn_resolutions, attn_type, n_classes, the schedule, image sizes."""
    model = ZOO[name]
    cfg = yaml.safe_load(model.config.read_text())
    params = cfg["model"]["params"]
    if model.kind == "ldm":
        unet = params["unet_config"]["params"]                 # openaimodel.UNetModel
        unet["model_channels"] = WIDTH                         # 224 / 192 / 256 in the real configs
        if unet.get("num_head_channels", -1) != -1:
            unet["num_head_channels"] = HEAD_CHANNELS          # 32 in celeba/ffhq/lsun_beds/cin256
        if unet.get("context_dim") is not None:
            unet["context_dim"] = CONTEXT                      # 512 in cin256, cin256-v2
        cond = params.get("cond_stage_config")
        if isinstance(cond, dict) and cond["target"].endswith("ClassEmbedder"):
            cond["params"]["embed_dim"] = CONTEXT              # ClassEmbedder: 512
        if is_bert(cond):                                      # BERTEmbedder: n_embed = context_dim
            shrink_bert(params, CONTEXT)
        first = params["first_stage_config"]["params"]
    else:
        first = params
    first["ddconfig"]["ch"] = WIDTH                            # 128 in every first stage
    if "n_embed" in first:
        first["n_embed"] = min(first["n_embed"], CODEBOOK)     # 8192 / 16384 / 256
    return cfg


# ------------------------------------------------------------------ the state dict, original names
def schedule_buffers(params: dict) -> dict[str, torch.Tensor]:
    """The persistent buffers of DDPM.register_schedule (float64 numpy math, stored as float32)."""
    if params.get("beta_schedule", "linear") != "linear" or params.get("given_betas") is not None:
        raise NotImplementedError("only the linear schedule (every zoo config) is mirrored")
    n = params.get("timesteps", 1000)
    start, end = params.get("linear_start", 1e-4), params.get("linear_end", 2e-2)
    betas = np.linspace(start ** 0.5, end ** 0.5, n, dtype=np.float64) ** 2
    alphas = 1.0 - betas
    ac = np.cumprod(alphas)
    ac_prev = np.append(1.0, ac[:-1])
    v = params.get("v_posterior", 0.0)
    post_var = (1 - v) * betas * (1.0 - ac_prev) / (1.0 - ac) + v * betas
    out = {
        "betas": betas, "alphas_cumprod": ac, "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": np.sqrt(ac), "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
        "log_one_minus_alphas_cumprod": np.log(1.0 - ac), "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1), "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
    }
    return {k: torch.tensor(a, dtype=torch.float32) for k, a in out.items()}


SCALE_FACTOR = 0.2281   # `scale_factor` where a config has scale_by_std (a trained one is 1/std of its latents)


def original_state_dict(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under exactly the original key names and shapes of a (shrunk) config: a
    LatentDiffusion's (schedule buffers, `scale_factor` if scale_by_std, `model.diffusion_model.*`,
    `model_ema.*` if use_ema, `first_stage_model.*`, `cond_stage_model.*`), or an autoencoder's
    own (no prefix, with `loss.*`)."""
    model = config["model"]
    params, w = model["params"], Weights(seed)
    if not model["target"].endswith("LatentDiffusion"):
        first_stage_keys(w, "", params, model["target"], with_loss=True)
        return w.sd
    w.sd.update(schedule_buffers(params))
    if params.get("scale_by_std"):
        w.sd["scale_factor"] = torch.tensor(SCALE_FACTOR)
    unet_keys(w, "model.diffusion_model.", params["unet_config"]["params"])
    if params.get("use_ema", True):                              # LitEma(self.model): shadows of every parameter
        unet = {k: v for k, v in w.sd.items() if k.startswith("model.")}
        w.sd["model_ema.decay"] = torch.tensor(0.9999)
        w.sd["model_ema.num_updates"] = torch.tensor(123456, dtype=torch.int32)
        for k, v in unet.items():                                # an average, near but not equal to the weights
            w.sd["model_ema." + k[len("model."):].replace(".", "")] = v + 0.1 * v.std() * w.randn(*v.shape)
    first = params["first_stage_config"]
    first_stage_keys(w, "first_stage_model.", first["params"], first["target"], with_loss=False)
    cond = params.get("cond_stage_config")
    if concat_cond_keys(w, params):                              # bsr_sr, inpainting_big, semantic_synthesis
        return w.sd
    if is_bert(cond):                                            # txt2img-large, text2img256, layout2img
        bert_keys(w, params)
        return w.sd
    if isinstance(cond, dict):
        if not cond["target"].endswith("ClassEmbedder"):
            raise NotImplementedError(cond["target"])
        p = cond["params"]
        w.sd["cond_stage_model.embedding.weight"] = w.randn(p.get("n_classes", 1000), p["embed_dim"])
    return w.sd


# ------------------------------------------------------------------ the Lightning 1.4 checkpoint
@contextlib.contextmanager
def _pickled_as(module: str, name: str, obj):
    """While inside, pickle writes `obj` as the global `module.name` (a module that need not be
    installed: a stand-in is registered in sys.modules, with any missing parents, then removed)."""
    obj.__module__, obj.__qualname__ = module, name
    parts = module.split(".")
    names = [".".join(parts[:i + 1]) for i in range(len(parts))]
    saved = {n: sys.modules.get(n) for n in names}
    for n in names:
        if n == module or n not in sys.modules:
            sys.modules[n] = types.ModuleType(n)
    setattr(sys.modules[module], name, obj)
    try:
        yield
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


class _NumpyScalar:
    """np.float64(value) as numpy 1.x pickled it: numpy.core.multiarray.scalar(dtype, bytes)."""

    def __init__(self, value: float):
        self.value = np.float64(value)

    def __reduce__(self):
        return _numpy_scalar, (self.value.dtype, self.value.tobytes())


def _numpy_scalar(dtype, data):          # pickled as numpy.core.multiarray.scalar; never called here
    raise AssertionError


def write_lightning_ckpt(path, state_dict: dict, *, global_step: int, epoch: int):
    """`state_dict` saved as PyTorch Lightning 1.4.2 saved a checkpoint: the callbacks' states keyed by
    the callback class (the global pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint),
    a tensor and a numpy scalar (numpy.core.multiarray.scalar) among them. `path`: a path or a binary file."""
    if isinstance(path, (str, Path)):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
    model_checkpoint = type("ModelCheckpoint", (), {})
    ckpt = {
        "epoch": epoch, "global_step": global_step, "pytorch-lightning_version": "1.4.2",
        "state_dict": OrderedDict(state_dict),             # module.state_dict() is an OrderedDict
        "callbacks": {model_checkpoint: {
            "monitor": "val/loss_simple_ema", "best_model_score": torch.tensor(0.1502),
            "best_model_path": "logs/checkpoints/epoch=000042.ckpt", "current_score": torch.tensor(0.1517),
            "dirpath": "logs/checkpoints", "kth_value": _NumpyScalar(0.1517),
        }},
        "optimizer_states": [], "lr_schedulers": [],
    }
    with _pickled_as("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint", model_checkpoint), \
            _pickled_as("numpy.core.multiarray", "scalar", _numpy_scalar):
        torch.save(ckpt, path)
    return path


def _zip(path: Path, member: str, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(member, data)


def write_mirror(folder, names, seed: int = 0) -> dict[str, Path]:
    """For each zoo name, its published file under `folder` at the published relative path (a
    .zip holding `model.ckpt`, or the bare .ckpt), from `shrunk_config(name)`. Returns the paths."""
    folder, out = Path(folder), {}
    for n, name in enumerate(names):
        model = ZOO[name]
        sd = original_state_dict(shrunk_config(name), seed + n)
        target = folder / model.file
        if model.file.endswith(".zip") and model.member:    # member "": the file is the checkpoint (inpainting_big)
            buf = io.BytesIO()
            write_lightning_ckpt(buf, sd, global_step=100_000 + n, epoch=40 + n)
            _zip(target, model.member, buf.getvalue())
        else:
            write_lightning_ckpt(target, sd, global_step=100_000 + n, epoch=40 + n)
        out[name] = target
    return out


def write_configs(folder, names) -> Path:
    """`<folder>/<name>.yaml`: the shrunk configs, named as the vendored ones in `ldm_core.zoo.CONFIGS`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(shrunk_config(name), sort_keys=False))
    return folder


class _Trap:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def malicious_ckpt(path, marker) -> Path:
    """A checkpoint (zip-format torch pickle, with a plausible state_dict) whose unpickling creates
    `marker`; a path ending in .zip gets it as the archive's `model.ckpt`, like a published zip."""
    path = Path(path)
    ckpt = {"state_dict": {"betas": torch.zeros(4)}, "callbacks": _Trap(str(marker))}
    if path.suffix == ".zip":
        buf = io.BytesIO()
        torch.save(ckpt, buf)
        _zip(path, "model.ckpt", buf.getvalue())
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(ckpt, path)
    return path
