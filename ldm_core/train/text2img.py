"""Stage 2 (paper §3.2-3.3): latent diffusion with cross-attention, text and layout -> image.

The UNet (diffusers `UNet2DConditionModel`) denoises 16x16x4 latents of the shared
autoencoder; a small transformer text encoder (tau_theta) is trained jointly from
scratch and read through cross-attention (plus an attention-pooled copy added to the
time embedding, which gives the colour/shape of a scene a fast global path). Captions
are dropped 10 % of the time so classifier-free guidance works.

One model serves two tabs. With `--grounding-fraction` (the built-in model) that share of
the examples also gets the scene's boxes as a grounding map concatenated to the latent
input (`ldm_core.grounding`; the caption kept `--grounding-caption` of the time), the rest
an empty map; a model without map channels is widened (new channels at zero). With
`--layout-fraction` instead, boxes are serialised as tokens (label + quantised corners,
paper §4.3) and read through the same cross-attention as the caption: the paper's way, which
this model size does not learn (see docs/evaluation.md). The catalog runs the export with
`Text2ImgPipeline` and with `Layout2ImgPipeline`; the stack holds its weights once.

What makes it trainable on 2 CPU cores (`diffusion.py`, `latents.py`): latents are computed
once and cached; latents are standardised per channel (statistics saved in the autoencoder's
config); the loss is min-SNR-weighted; EMA weights are what gets sampled and exported;
attention only at the two low resolutions; and accuracy (not only loss) is measured during
training.

    python -m ldm_core.train text2img --out runs/text2img --export models/shapes-text2img
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from ..data.judge import judge_caption, judge_layout
from ..data.shapes import RELATIONS
from ..grounding import GROUNDING_CHANNELS, grounding_map
from ..options import DEFAULT_SAMPLER
from ..pipelines.common import COORD_CHANNELS
from ..pipelines.layout2img import Layout2ImgPipeline
from ..pipelines.text2img import Text2ImgPipeline
from ..text import build_tokenizer, layout_text
from .attention_loss import AttentionLoss, object_tokens
from .diffusion import EVAL_SEED0, Batch, DiffusionConfig, Stage, Weights, fit
from .latents import Latents, load_latents
from .loop import start
from .models import build_unet, fit_input, load_text_models, new_text_encoder, tokenize


@dataclass
class Text2ImgConfig(DiffusionConfig):
    out: str = "runs/text2img"
    text_hidden: int = 128
    text_layers: int = 3
    max_length: int = 80               # caption + up to 8 boxes of layout tokens
    caption_dropout: float = 0.1
    coord_channels: bool = False       # feed the UNet (x, y) coordinate maps (CoordConv) for position control
    layout_fraction: float = 0.4       # share of examples conditioned on box tokens (+ caption half the time)
    grounding_fraction: float = 0.0    # share of examples given their boxes as a grounding map (layout, §4.3);
                                       # > 0 replaces the box tokens of --layout-fraction
    grounding_caption: float = 0.5     # ... of which this share also keeps the caption (else empty)
    label_dropout: float = 0.05        # per box: drop its colour (and, separately, its shape) from the map
    relation_share: float = 0.0        # share of each batch drawn from relation scenes, the four relations
                                       # equally often (0 = scenes as cached: a quarter relations, unbalanced)
    attention_loss: float = 0.0        # weight of the loss tying each object's words' cross-attention to
                                       # its box (`attention_loss.py`); 0 = off
    relation_converse: float = 0.0     # share of relation captions said the other way round
                                       # ("A left of B" -> "B right of A": the same image)


# ------------------------------------------------------------------ batches

def condition_text(cfg: Text2ImgConfig, scene: dict, r: float) -> str:
    """The token string for a scene (its cached meta) whose example kind drew `r` in [0, 1): with
    grounding maps, the caption, or (boxes in the map) the caption a share of the time; else the
    caption, or its boxes as tokens (with the caption half the time)."""
    if cfg.grounding_fraction > 0:
        if r >= cfg.grounding_fraction or r < cfg.grounding_fraction * cfg.grounding_caption:
            return scene["caption"]
        return ""
    if r >= cfg.layout_fraction:
        return scene["caption"]
    boxes = [(b["label"], b["box"]) for b in scene["boxes"]]
    return layout_text(scene["caption"] if r < cfg.layout_fraction / 2 else "", boxes)


def grounding_batch(meta: list[dict], idx: list[int], kind: list[float], cfg: Text2ImgConfig,
                    rng: random.Random) -> torch.Tensor:
    """(B, G, 16, 16) grounding maps: scene i's boxes where kind < grounding_fraction, else empty.
    Each box loses its colour and (separately) its shape with probability `label_dropout`, so
    partial labels ("circle", "red") work too."""
    maps = torch.zeros(len(idx), GROUNDING_CHANNELS, 16, 16)
    for b, (i, r) in enumerate(zip(idx, kind)):
        if r >= cfg.grounding_fraction:
            continue
        boxes = []
        for o in meta[i]["boxes"]:
            color, shape = o["label"].split()
            if rng.random() < cfg.label_dropout:
                color = None
            elif rng.random() < cfg.label_dropout:
                shape = None
            boxes.append(((color, shape), o["box"]))
        maps[b] = grounding_map(boxes, 16, 16)
    return maps


CONVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def relation_groups(meta: list[dict]) -> list[torch.Tensor]:
    """The cached relation scenes' indices, one tensor per relation word that occurs (RELATIONS order)."""
    groups: dict[str, list[int]] = {r: [] for r in RELATIONS}
    for i, m in enumerate(meta):
        if m["form"] == "relation":
            groups[next(r for r in RELATIONS if f" {r} " in m["caption"])].append(i)
    if not any(groups.values()):
        raise ValueError("--relation-share: the cached scenes hold no relation captions")
    return [torch.tensor(v) for v in groups.values() if v]


def rebalance(cfg: Text2ImgConfig, groups: list[torch.Tensor], idx: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """`idx` with its first `relation_share` replaced by relation scenes, each relation equally likely."""
    n = round(cfg.relation_share * len(idx))
    which = torch.randint(0, len(groups), (n,), generator=gen).tolist()
    picks = [groups[g][torch.randint(0, len(groups[g]), (1,), generator=gen)].item() for g in which]
    return torch.cat([torch.tensor(picks, dtype=idx.dtype), idx[n:]])


def say_converse(caption: str) -> str:
    """'a red circle left of a blue square' -> 'a blue square right of a red circle'."""
    rel = next(r for r in RELATIONS if f" {r} " in caption)
    a, b = caption.split(f" {rel} ")
    return f"{b} {CONVERSE[rel]} {a}"


def make_batch(cfg: Text2ImgConfig, data: Latents, tokenizer, idx: torch.Tensor, gen: torch.Generator,
               rng: random.Random, groups: list[torch.Tensor] | None = None) -> Batch:
    """Scenes `idx` (a share swapped for balanced relation scenes with `relation_share`): their latents,
    their condition texts (empty at `caption_dropout`), and with grounding their boxes as maps."""
    if cfg.relation_share > 0:
        idx = rebalance(cfg, groups, idx, gen)
    drop = (torch.rand(len(idx), generator=gen) < cfg.caption_dropout).tolist()
    kind = torch.rand(len(idx), generator=gen).tolist()   # which kind of example each one is
    texts = ["" if d else condition_text(cfg, data.meta[i], r) for i, d, r in zip(idx.tolist(), drop, kind)]
    if cfg.relation_converse > 0:
        texts = [say_converse(t) if data.meta[i]["form"] == "relation" and t == data.meta[i]["caption"]
                 and rng.random() < cfg.relation_converse else t for t, i in zip(texts, idx.tolist())]
    maps = None
    if cfg.grounding_fraction > 0:
        maps = grounding_batch(data.meta, idx.tolist(), kind, cfg, rng).to(data.device)
    aux = None
    if cfg.attention_loss > 0:
        aux = object_tokens(tokenizer, texts, [data.meta[i]["boxes"] for i in idx.tolist()], cfg.max_length)
    return Batch(x0=data.latents[idx.to(data.device)], ids=tokenize(tokenizer, texts, cfg.max_length, data.device),
                 extra=maps, aux=aux)


# ------------------------------------------------------------------ evaluation

def measure_accuracy(pipe: Text2ImgPipeline, scenes, steps: int = 25, guidance: float = 4.0) -> tuple[dict, np.ndarray]:
    """Generate each scene's caption once; the share judged right, per caption form."""
    images = []
    for i in range(0, len(scenes), 32):
        chunk = scenes[i:i + 32]
        out = pipe(prompt=[s.caption for s in chunk], negative_prompt="", height=64, width=64,
                   num_inference_steps=steps, guidance_scale=guidance,
                   seeds=[EVAL_SEED0 + j for j in range(i, i + len(chunk))], sampler=DEFAULT_SAMPLER)
        images += [np.asarray(im) for im in out.images]
    images = np.stack(images)
    acc: dict[str, list[bool]] = {}
    for s, im in zip(scenes, images):
        acc.setdefault(s.form, []).append(bool(judge_caption(s, im)["correct"]))
    return {f"acc_{k}": float(np.mean(v)) for k, v in acc.items()}, images


def measure_layout_accuracy(pipe: Layout2ImgPipeline, scenes, steps: int = 25, guidance: float = 4.0) -> dict:
    """Per-box accuracy of the same weights run as a layout model (boxes only, no caption)."""
    per_box = []
    for i, s in enumerate(scenes):
        boxes = [(o.label, o.box) for o in s.objects]
        im = pipe(prompt="", boxes=boxes, negative_prompt="", height=64, width=64, num_inference_steps=steps,
                  guidance_scale=guidance, seeds=[EVAL_SEED0 + i], sampler=DEFAULT_SAMPLER).images[0]
        per_box += judge_layout(boxes, np.asarray(im))["per_box"]
    return {"acc_layout_box": float(np.mean(per_box))} if per_box else {}


def evaluate(cfg: Text2ImgConfig, w: Weights, scenes) -> tuple[dict, np.ndarray]:
    parts = dict(vae=w.vae, text_encoder=w.text_encoder, tokenizer=w.tokenizer, unet=w.unet, scheduler=w.scheduler)
    metrics, images = measure_accuracy(Text2ImgPipeline(**parts), scenes)
    if cfg.layout_fraction > 0 or cfg.grounding_fraction > 0:
        metrics.update(measure_layout_accuracy(Layout2ImgPipeline(**parts), scenes[-cfg.eval_prompts_per_form:]))
    return metrics, images


# ------------------------------------------------------------------ training

def networks(cfg: Text2ImgConfig, latent_channels: int, tokenizer) -> tuple:
    """The UNet (reading latents, grounding maps if any, coordinate maps if asked) and text encoder:
    new, or loaded from `cfg.init_from` and widened (new input channels at zero) to what they now read."""
    grounded = cfg.grounding_fraction > 0
    in_ch = Text2ImgPipeline.unet_in_channels(latent_channels, grounding=grounded, coords=cfg.coord_channels)
    if not cfg.init_from:
        return build_unet(cfg, in_ch, latent_channels), new_text_encoder(cfg, tokenizer)
    unet, text_encoder = load_text_models(cfg.init_from)
    old = unet.config.in_channels
    # grounding maps added to a model that reads coordinate maps go before them (those stay last)
    had_coords = old == Text2ImgPipeline.unet_in_channels(latent_channels, coords=True)
    at = old - COORD_CHANNELS if grounded and cfg.coord_channels and had_coords else None
    return fit_input(unet, in_ch, cfg.init_from, at, hint="is --coord-channels missing?"), text_encoder


def train(cfg: Text2ImgConfig) -> None:
    acc, out = start(cfg)
    data = load_latents(cfg, acc.device, out)
    tokenizer = build_tokenizer(cfg.max_length)
    unet, text_encoder = networks(cfg, data.channels, tokenizer)
    groups = relation_groups(data.meta) if cfg.relation_share > 0 else None
    aux = AttentionLoss(unet, cfg.attention_loss) if cfg.attention_loss > 0 else None
    fit(cfg, acc, out, data, Stage(pipeline=Text2ImgPipeline, unet=unet, text_encoder=text_encoder, tokenizer=tokenizer,
                                   batch=partial(make_batch, cfg, data, tokenizer, groups=groups), aux_loss=aux,
                                   evaluate=partial(evaluate, cfg)))
