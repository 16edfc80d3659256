"""Inpainting (paper §4.5): the noisy latents, the mask and the masked image's latents in, the
caption (optional) through cross-attention.

The UNet input is [latents (C) | mask (1) | masked-image latents (C)] (+ coordinate maps), as
`InpaintPipeline` feeds it. Masks are random (`ldm_core.data.masks`: one object's box, any box,
brush strokes, large regions); the caption is empty 30 % of the time. Started from the text2img
weights (`--init-from`), the new input channels start at zero.

    python -m ldm_core.train inpaint --out runs/inpaint --init-from models/shapes-text2img \
        --latent-cache runs/text2img/latents.safetensors --export models/shapes-inpaint
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch
from PIL import Image

from ..data.images import from_uint8, psnr
from ..data.judge import judge_caption
from ..data.masks import OBJECT_MASK_STYLES, object_mask, random_mask
from ..data.shapes import sample_scene
from ..eval.restore import evaluate_inpaint_wide
from ..options import DEFAULT_SAMPLER
from ..pipelines.common import encode_latents
from ..pipelines.inpaint import InpaintPipeline, mask_latents
from ..text import build_tokenizer
from .diffusion import EVAL_SEED0, Batch, DiffusionConfig, Stage, Weights, fit
from .latents import Latents, load_latents
from .loop import start
from .models import build_unet, fit_input, load_text_models, new_text_encoder, tokenize


@dataclass
class InpaintConfig(DiffusionConfig):
    out: str = "runs/inpaint"
    text_hidden: int = 128
    text_layers: int = 3
    max_length: int = 24
    caption_dropout: float = 0.3       # the caption is optional: empty 30 % of the time
    coord_channels: bool = False       # feed the UNet (x, y) coordinate maps (CoordConv)
    object_masks: float = 0.0          # share of masks drawn around one object the ways people mask one
                                       # (`object_mask` styles; the rest: MASK_KINDS at random)
    object_prompt: float = 0.0         # ... of whose captioned examples this share is prompted with the
                                       # masked object alone ("a red circle") instead of the caption


# ------------------------------------------------------------------ batches

def draw_mask(cfg: InpaintConfig, scene, rng: random.Random) -> tuple[np.ndarray, str | None]:
    """A training mask for `scene` and, when it was drawn around one object, that object's label."""
    if cfg.object_masks > 0 and rng.random() < cfg.object_masks:
        j = rng.randrange(len(scene.objects))
        return object_mask(scene, rng, j, rng.choice(OBJECT_MASK_STYLES)), scene.objects[j].label
    return random_mask(scene, rng), None


@torch.no_grad()
def masked_inputs(vae, masks: torch.Tensor, scenes: list, device) -> torch.Tensor:
    """(B, 1 + C, h, w) for `scenes` and their (B, 1, 64, 64) masks: the mask on the latent grid (a cell
    is masked when any of its pixels is), and the latents of the image with the masked pixels blanked."""
    x = from_uint8(np.stack([s.image for s in scenes]))  # (B, 3, 64, 64)
    masked = encode_latents(vae, (x * (1 - masks)).to(device))  # (B, C, 16, 16)
    return torch.cat([mask_latents(masks.to(device), masked.shape[-2:]), masked], 1)


def make_batch(cfg: InpaintConfig, data: Latents, tokenizer, idx: torch.Tensor, gen: torch.Generator,
               rng: random.Random) -> Batch:
    drop = (torch.rand(len(idx), generator=gen) < cfg.caption_dropout).tolist()
    short = (torch.rand(len(idx), generator=gen) < cfg.object_prompt).tolist()
    scenes = [sample_scene(i) for i in idx.tolist()]
    drawn = [draw_mask(cfg, s, rng) for s in scenes]
    masks = torch.from_numpy(np.stack([m for m, _ in drawn]))[:, None].float()  # (B, 1, 64, 64)
    texts = ["" if d else f"a {label}" if label and sh else data.meta[i]["caption"]
             for i, d, sh, (_, label) in zip(idx.tolist(), drop, short, drawn)]
    return Batch(x0=data.latents[idx.to(data.device)], ids=tokenize(tokenizer, texts, cfg.max_length, data.device),
                 extra=masked_inputs(data.vae, masks, scenes, data.device))


# ------------------------------------------------------------------ evaluation

@torch.no_grad()
def measure_inpaint(pipe: InpaintPipeline, scenes, steps: int = 25, guidance: float = 3.0) -> tuple[dict, np.ndarray]:
    """Mask one object of each scene; with the scene's caption the object must come back
    (judged by the detector on the whole image), and pixels outside the mask must not move."""
    ok = []
    outside = []
    images = []
    for i, s in enumerate(scenes):
        m = random_mask(s, random.Random(EVAL_SEED0 + i), "object")
        out = pipe(prompt=s.caption, image=Image.fromarray(s.image),
                   mask_image=Image.fromarray((m * 255).astype(np.uint8)), negative_prompt="", height=64, width=64,
                   num_inference_steps=steps, guidance_scale=guidance, seeds=[EVAL_SEED0 + i],
                   sampler=DEFAULT_SAMPLER).images[0]
        a = np.asarray(out)
        images.append(a)
        outside.append(psnr(a[~m][None], s.image[~m][None]) if (~m).any() else 99.0)
        ok.append(bool(judge_caption(s, a)["correct"]))
    return {"inpaint_outside_psnr": float(np.mean(outside)), "acc_inpaint_object": float(np.mean(ok))}, np.stack(images)


def measure_inpaint_wide(pipe: InpaintPipeline, n_scenes: int, steps: int = 25, guidance: float = 3.0) -> dict:
    """The share restored on the first `n_scenes` scenes of the wider eval (every mask style and prompt kind)."""

    def inpaint(prompt, image, mask, seed):
        return pipe(prompt=prompt, image=image, mask_image=mask, negative_prompt="", height=64, width=64,
                    num_inference_steps=steps, guidance_scale=guidance, seeds=[seed], sampler=DEFAULT_SAMPLER).images[0]
    return {"acc_inpaint_wide": evaluate_inpaint_wide(inpaint, n_scenes)[2]["object_restored"]}


def evaluate(w: Weights, scenes) -> tuple[dict, np.ndarray]:
    pipe = InpaintPipeline(vae=w.vae, text_encoder=w.text_encoder, tokenizer=w.tokenizer, unet=w.unet,
                           scheduler=w.scheduler)
    metrics, images = measure_inpaint(pipe, scenes)
    return {**metrics, **measure_inpaint_wide(pipe, max(1, len(scenes) // 8))}, images


# ------------------------------------------------------------------ training

def train(cfg: InpaintConfig) -> None:
    acc, out = start(cfg)
    data = load_latents(cfg, acc.device, out)
    tokenizer = build_tokenizer(cfg.max_length)
    in_ch = InpaintPipeline.unet_in_channels(data.channels, coords=cfg.coord_channels)
    if cfg.init_from:   # e.g. from the text-to-image model: the new input channels start at zero
        unet, text_encoder = load_text_models(cfg.init_from)
        unet = fit_input(unet, in_ch, cfg.init_from, hint="is --coord-channels missing?")
    else:
        unet = build_unet(cfg, in_ch, data.channels)
        text_encoder = new_text_encoder(cfg, tokenizer)
    fit(cfg, acc, out, data, Stage(pipeline=InpaintPipeline, unet=unet, text_encoder=text_encoder, tokenizer=tokenizer,
                                   batch=partial(make_batch, cfg, data, tokenizer), evaluate=evaluate))
