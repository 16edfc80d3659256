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
  concat conditioning (bsr_sr, inpainting_big, semantic_synthesis) -> SuperResPipeline,
      PaperInpaintPipeline, SemanticPipeline (+ SpatialRescaler): ldm_core.zoo.concat.
  BERTEmbedder -> LDMBertModel (+ bert-base-uncased's tokenizer where it tokenizes): ldm_core.zoo.bert.

Here: config reading, the schedule, the class embedder, the whole model and writing it; the UNet
is ldm_core.zoo.unet's, the first stage ldm_core.zoo.first_stage's, the renaming machinery
ldm_core.zoo.rename's (their public names are re-exported here).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import diffusers
import torch
import yaml
from diffusers import DDIMScheduler

from ..pipelines.class_embedder import ClassEmbedder
from . import SOURCE_FILE, imagenet_classes, zoo_dir
from .bert import BERT_EMBEDDER, TEXT_PIPELINES, text_components, text_pipeline, unet_node
from .concat import CONCAT_PIPELINES, concat_components, concat_pipeline
from .first_stage import KL, VQ, convert_first_stage
from .rename import ConversionError, load_strict, need
from .safe_load import read_state_dict
from .unet import OPENAI_UNET, LDMUNet2DModel, convert_unet

__all__ = ["CLASS_EMBEDDER", "CONVERTER_VERSION", "KL", "LDM", "OPENAI_UNET", "SCHEDULE_BUFFERS", "VQ",
           "ConversionError", "Converted", "LDMUNet2DModel", "convert_checkpoint", "convert_first_stage",
           "convert_state_dict", "convert_unet", "make_scheduler", "read_config", "save_converted", "sha256_file"]

CONVERTER_VERSION = 1
LDM = "ldm.models.diffusion.ddpm.LatentDiffusion"
CLASS_EMBEDDER = "ldm.modules.encoders.modules.ClassEmbedder"
# DDPM.register_schedule's buffers (ddpm.py): checked against the config, not converted
SCHEDULE_BUFFERS = {"betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                    "posterior_mean_coef1", "posterior_mean_coef2", "lvlb_weights", "logvar"}


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
    rescaler: torch.nn.Module | None = None   # SemanticPipeline: the SpatialRescaler (ldm_core.zoo.concat)
    text_encoder: torch.nn.Module | None = None   # BERTEmbedder -> LDMBertModel (ldm_core.zoo.bert)
    tokenizer: object | None = None    # its BERT tokenizer (None where it takes token ids)

    def components(self) -> dict:
        return {k: v for k in ("vae", "text_encoder", "tokenizer", "unet", "scheduler", "class_embedder", "rescaler")
                if (v := getattr(self, k)) is not None}


# ------------------------------------------------------------------ the schedule
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


# ------------------------------------------------------------------ the whole model
def _take(sd: dict, prefix: str) -> dict:
    return {k[len(prefix):]: sd.pop(k) for k in [k for k in sd if k.startswith(prefix)]}


def _pipeline_of(p: dict) -> str:
    """The studio pipeline of a LatentDiffusion's conditioning (ddpm.py's conditioning_key rules)."""
    cs = p.get("cond_stage_config")
    key = p.get("conditioning_key") or (None if cs == "__is_unconditional__"
                                        else "concat" if p.get("concat_mode", True) else "crossattn")
    if cs == "__is_unconditional__":   # ddpm.py: an unconditional model has no conditioning key
        return "UnconditionalPipeline"
    if key == "crossattn" and isinstance(cs, dict) and cs.get("target") == CLASS_EMBEDDER:
        return "ClassConditionalPipeline"
    if key == "crossattn" and isinstance(cs, dict) and cs.get("target") == BERT_EMBEDDER:
        return text_pipeline(cs)       # txt2img-large, text2img256, layout2img: ldm_core.zoo.bert
    if key == "concat":                # bsr_sr, inpainting_big, semantic_synthesis: ldm_core.zoo.concat
        return concat_pipeline(p)
    raise ConversionError(f"conditioning_key {key!r} with cond_stage_config "
                          f"{cs.get('target') if isinstance(cs, dict) else cs!r} is not supported")


def _scale_factor(sd: dict, p: dict) -> float:
    scale = sd.pop("scale_factor", None)     # a buffer only when scale_by_std (ddpm.py); else a plain param
    if scale is None and p.get("scale_by_std"):
        raise ConversionError("scale_by_std model without its scale_factor buffer")
    return float(scale) if scale is not None else float(p.get("scale_factor", 1.0))


def _unet_weights(sd: dict, p: dict, ema: bool | None) -> tuple[dict, bool]:
    """model.diffusion_model.* or its EMA copy (model_ema.*: LitEma's dot-less names), taken from `sd`."""
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
    return unet_sd, ema


def _class_embedder(cond_sd: dict, cs: dict) -> ClassEmbedder:
    """cond_stage_model.* of a ClassEmbedder (embedding.weight only) -> ldm_core's ClassEmbedder."""
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
    load_strict(embedder, {"embedding.weight": w}, [], "class embedder")
    return embedder


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
    pipeline = _pipeline_of(p)
    scheduler = make_scheduler(p)
    _check_schedule(scheduler, {k: sd.pop(k) for k in list(sd) if k in SCHEDULE_BUFFERS})
    scale = _scale_factor(sd, p)
    unet_sd, ema = _unet_weights(sd, p, ema)
    vae_sd = _take(sd, "first_stage_model.")
    _take(vae_sd, "loss.")
    cond_sd = _take(sd, "cond_stage_model.")
    if sd:
        raise ConversionError(f"{len(sd)} keys this converter does not know, e.g. {list(sd)[:4]}")
    unet = convert_unet(unet_sd, unet_node(need(p, "unet_config", "model.params")))
    vae = convert_first_stage(vae_sd, need(p, "first_stage_config", "model.params"), scale)
    embedder, extra = None, {}
    if pipeline == "ClassConditionalPipeline":
        embedder = _class_embedder(cond_sd, p["cond_stage_config"])
    elif pipeline in CONCAT_PIPELINES:      # empties cond_sd: the rescaler, or nothing of its own
        extra = concat_components(pipeline, cond_sd, vae_sd, p)
    elif pipeline in TEXT_PIPELINES:        # empties cond_sd: LDMBertModel and its tokenizer
        extra = text_components(cond_sd, p)
    elif cond_sd:
        raise ConversionError(f"an unconditional model with cond_stage_model keys {list(cond_sd)[:4]}")
    return Converted(pipeline, vae, unet, scheduler, embedder, ema, **extra)


# ------------------------------------------------------------------ writing
def _library(component) -> list[str]:
    cls = type(component)
    lib = cls.__module__.partition(".")[0]
    return [lib if lib in ("diffusers", "transformers") else "ldm_core", cls.__name__]


def save_converted(conv: Converted, folder, source: dict) -> None:
    """Each component as diffusers writes it (safetensors), model_index.json, source.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index = {"_class_name": conv.pipeline, "_diffusers_version": diffusers.__version__}
    for name, comp in conv.components().items():
        if isinstance(comp, DDIMScheduler) or not isinstance(comp, torch.nn.Module):   # a scheduler, a tokenizer
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


def _replace_folder(conv: Converted, source: dict, root: Path, name: str) -> Path:
    """Write `root/name` atomically: a temp folder beside it, then rename (the old one kept until then)."""
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
    return _replace_folder(conv, source, root, name)
