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
paper §4.3) and read through the same cross-attention as the caption: the earlier design,
which this model size did not learn (see docs/evaluation.md). The catalog runs the export with
`Text2ImgPipeline` and with `Layout2ImgPipeline`; the stack holds its weights once.

What makes it trainable on 2 CPU cores: latents are computed once and cached; latents
are standardised per channel (statistics saved in the autoencoder's config); the loss
is min-SNR-weighted; EMA weights are what gets sampled and exported; attention only at
the two low resolutions; and accuracy (not only loss) is measured during training.

    python -m ldm_core.train text2img --out runs/text2img --export models/shapes-text2img
"""
from __future__ import annotations

import copy
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..data.shapes import CAPTION_FORMS, sample_scene
from ..grounding import GROUNDING_CHANNELS, grounding_map
from ..pipelines.common import COORD_CHANNELS, encode_latents, with_coords
from ..pipelines.superres import bicubic_latent
from ..pipelines.text2img import Text2ImgPipeline
from ..text import TextEncoderConfig, build_text_encoder, build_tokenizer, layout_text
from .common import (Checkpoint, LossLog, RunConfig, Timer, apply_threads, config_dict, ensure_dir, from_uint8,
                     save_grid, save_json)

EVAL_SEED0 = 20_000_000


@dataclass
class Text2ImgConfig(RunConfig):
    out: str = "runs/text2img"
    steps: int = 20000
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 200
    autoencoder: str = "models/shapes-autoencoder"
    num_scenes: int = 60000            # cached training scenes (latents computed once)
    channels: tuple[int, ...] = (64, 128, 192)
    layers_per_block: int = 1
    head_dim: int = 32
    text_hidden: int = 128
    text_layers: int = 3
    max_length: int = 80               # caption + up to 8 boxes of layout tokens
    layout_fraction: float = 0.4       # share of examples conditioned on boxes (+ caption half the time)
    caption_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.999
    eval_prompts_per_form: int = 8     # accuracy measured on this many prompts per caption form
    init_from: str = ""                # start from an exported model folder (e.g. the committed one)
    export: str = ""
    latent_cache: str = ""             # reuse another run's latents.safetensors (same autoencoder!)
    task: str = "text2img"
    coord_channels: bool = False       # feed the UNet (x, y) coordinate maps (CoordConv) for position control
    photo_fraction: float = 0.0        # superres: share of each batch that is natural-photo crops
    degrade_p: float = 0.5             # superres: probability of the blur, and of the noise, in a degradation
    bicubic_latent: bool = False       # superres: the UNet also reads the latent of the bicubic upsampling
    photo_rotate: bool = False         # superres: photo crops also turned by multiples of 90 degrees
    workers: int = 1                   # processes rendering the latent cache
    grounding_fraction: float = 0.0    # share of examples given their boxes as a grounding map (layout, §4.3)
    grounding_caption: float = 0.5     # ... of which this share also keeps the caption (else empty)
    label_dropout: float = 0.05        # per box: drop its colour (and, separately, its shape) from the map


@dataclass
class InpaintConfig(Text2ImgConfig):
    """Inpainting: latents + mask + masked-image latents in; the caption (optional) through cross-attention."""
    out: str = "runs/inpaint"
    task: str = "inpaint"
    max_length: int = 24
    layout_fraction: float = 0.0
    caption_dropout: float = 0.3       # the caption is optional: empty 30 % of the time


@dataclass
class SuperResConfig(Text2ImgConfig):
    """4x super-resolution: latents + the 16x16 low-resolution image in; no text."""
    out: str = "runs/superres"
    task: str = "superres"
    layout_fraction: float = 0.0
    caption_dropout: float = 0.0


def build_unet(cfg: Text2ImgConfig, in_channels: int = 4, out_channels: int = 4) -> UNet2DConditionModel:
    n = len(cfg.channels)
    down = ("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1)   # no attention at full latent res
    up = ("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",)
    return UNet2DConditionModel(
        sample_size=16, in_channels=in_channels, out_channels=out_channels, down_block_types=down,
        up_block_types=up, block_out_channels=tuple(cfg.channels), layers_per_block=cfg.layers_per_block,
        cross_attention_dim=cfg.text_hidden, attention_head_dim=cfg.head_dim, norm_num_groups=32,
        addition_embed_type="text", addition_embed_type_num_heads=4)


def noise_scheduler() -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                         beta_end=0.012, prediction_type="epsilon", clip_sample=False)


def min_snr_weights(scheduler: DDPMScheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights for epsilon prediction (Hang et al. 2023)."""
    ac = scheduler.alphas_cumprod.to(t.device)[t]
    snr = ac / (1 - ac)
    return torch.clamp(snr, max=gamma) / snr


def _render_chunk(start_stop: tuple[int, int]) -> list:
    return [sample_scene(s) for s in range(*start_stop)]


@torch.no_grad()
def build_latent_cache(vae: AutoencoderKL, n: int, path: Path, batch: int = 256,
                       workers: int = 1) -> tuple[torch.Tensor, list[dict]]:
    """Render scenes 0..n-1 (in `workers` processes), encode them once; cached at `path` (safetensors + json)."""
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if len(meta) == n:
            return load_file(path)["latents"].float(), meta
    lat, meta = [], []
    chunks = [(i, min(n, i + batch)) for i in range(0, n, batch)]
    pool = None
    if workers > 1:
        import multiprocessing
        pool = multiprocessing.get_context("fork").Pool(workers)
    rendered = pool.imap(_render_chunk, chunks) if pool else map(_render_chunk, chunks)
    for scenes in tqdm(rendered, total=len(chunks), desc="encoding scenes"):
        x = from_uint8(np.stack([s.image for s in scenes])).to(next(vae.parameters()).device)
        lat.append(encode_latents(vae, x).half())
        meta += [{"caption": s.caption, "boxes": s.boxes, "form": s.form} for s in scenes]
    if pool:
        pool.close()
    latents = torch.cat(lat).contiguous()  # (N, 4, 16, 16)
    save_file({"latents": latents}, path)
    meta_path.write_text(json.dumps(meta))
    return latents.float(), meta


def eval_prompts(per_form: int) -> list:
    return [sample_scene(EVAL_SEED0 + i * 7 + k, form) for k, form in enumerate(CAPTION_FORMS) for i in range(per_form)]


def measure_accuracy(pipe: Text2ImgPipeline, scenes, steps: int = 25, guidance: float = 4.0) -> tuple[dict, np.ndarray]:
    """Generate each scene's caption once; score with the shapes detector when it is present."""
    images = []
    for i in range(0, len(scenes), 32):
        chunk = scenes[i:i + 32]
        out = pipe([s.caption for s in chunk], num_inference_steps=steps, guidance_scale=guidance,
                   seeds=[EVAL_SEED0 + j for j in range(i, i + len(chunk))])
        images += [np.asarray(im) for im in out.images]
    images = np.stack(images)
    try:
        from ..eval.metrics import judge_caption
    except ImportError:
        return {}, images
    acc: dict[str, list[bool]] = {}
    for s, im in zip(scenes, images):
        acc.setdefault(s.form, []).append(bool(judge_caption(s, im)["correct"]))
    return {f"acc_{k}": float(np.mean(v)) for k, v in acc.items()}, images


def measure_layout_accuracy(pipe, scenes, steps: int = 25, guidance: float = 4.0) -> dict:
    """Per-box accuracy of the same weights run as a layout model (boxes only, no caption)."""
    from ..pipelines.layout2img import Layout2ImgPipeline
    try:
        from ..eval.metrics import judge_layout
    except ImportError:
        return {}
    lay = Layout2ImgPipeline(**pipe.components)
    per_box = []
    for i, s in enumerate(scenes):
        boxes = [(o.label, o.box) for o in s.objects]
        im = lay("", boxes, num_inference_steps=steps, guidance_scale=guidance, seeds=[EVAL_SEED0 + i]).images[0]
        per_box += judge_layout(boxes, np.asarray(im))["per_box"]
    return {"acc_layout_box": float(np.mean(per_box))} if per_box else {}


def export_model(dest: Path, pipeline_class: str, unet, text_encoder, tokenizer, scheduler, autoencoder: str,
                 fp16: bool = True) -> None:
    """Write a diffusers-format folder the studio loads; the autoencoder is referenced, not copied."""
    dest = ensure_dir(dest)
    dtype = torch.float16 if fp16 else torch.float32
    copy.deepcopy(unet).to(dtype).save_pretrained(dest / "unet", safe_serialization=True)
    index = {"_class_name": pipeline_class, "vae": ["diffusers", "AutoencoderKL"],
             "unet": ["diffusers", type(unet).__name__], "scheduler": ["diffusers", "DDPMScheduler"],
             "_shared": {"vae": Path(autoencoder).name}}
    if text_encoder is not None:
        copy.deepcopy(text_encoder).to(dtype).save_pretrained(dest / "text_encoder", safe_serialization=True)
        tokenizer.save_pretrained(dest / "tokenizer")
        index.update(text_encoder=["transformers", "CLIPTextModel"],
                     tokenizer=["transformers", "PreTrainedTokenizerFast"])
    scheduler.save_pretrained(dest / "scheduler")
    save_json(dest / "model_index.json", index)


# ------------------------------------------------------------------ tasks
# What differs between the tasks that train here: the UNet's extra input channels (concatenated
# conditioning), whether a text encoder is trained, the pipeline that samples and exports.
PIPELINE_CLASS = {"text2img": "Text2ImgPipeline", "inpaint": "InpaintPipeline", "superres": "SuperResPipeline"}
EXTRA_CHANNELS = {"text2img": 0, "inpaint": 5, "superres": 3}


def build_unet2d(cfg, in_channels: int, out_channels: int = 4):
    """Text-free UNet for super-resolution: attention only at the two low resolutions."""
    from diffusers import UNet2DModel
    n = len(cfg.channels)
    return UNet2DModel(sample_size=16, in_channels=in_channels, out_channels=out_channels,
                       block_out_channels=tuple(cfg.channels), layers_per_block=cfg.layers_per_block,
                       down_block_types=("DownBlock2D",) + ("AttnDownBlock2D",) * (n - 1),
                       up_block_types=("AttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
                       attention_head_dim=cfg.head_dim, norm_num_groups=32)


def extra_inputs(task: str, vae, idx: list[int], rng, device, degrade_p: float = 0.5) -> torch.Tensor | None:
    """Concatenated conditioning for scenes `idx`: inpaint (B, 5, 16, 16) = mask + masked-image
    latents; superres (B, 3, 16, 16) = the degraded 16x16 image. None for text2img."""
    if task == "text2img":
        return None
    from .conditioning import degrade, random_mask, to_unit
    scenes = [sample_scene(i) for i in idx]
    images = np.stack([s.image for s in scenes])  # (B, 64, 64, 3)
    if task == "superres":
        return to_unit(np.stack([degrade(im, rng, p=degrade_p) for im in images])).to(device)
    from ..pipelines.inpaint import mask_latents
    masks = torch.from_numpy(np.stack([random_mask(s, rng) for s in scenes]))[:, None].float()  # (B, 1, 64, 64)
    x = to_unit(images)
    with torch.no_grad():
        masked = encode_latents(vae, (x * (1 - masks)).to(device))  # (B, 4, 16, 16)
    return torch.cat([mask_latents(masks.to(device), masked.shape[-2:]), masked], 1)


def photo_examples(vae, k: int, rng, device, degrade_p: float = 0.5,
                   rotate: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Super-resolution examples from natural-photo crops: (k, 4, 16, 16) target latents and
    (k, 3, 16, 16) degraded low-resolution images."""
    from ..data.photos import random_crops
    from .conditioning import degrade, to_unit
    crops = random_crops(k, np.random.default_rng(rng.randrange(2 ** 31)), rotate=rotate)  # (k, 64, 64, 3)
    with torch.no_grad():
        z = encode_latents(vae, to_unit(crops).to(device))
    return z, to_unit(np.stack([degrade(c, rng, p=degrade_p) for c in crops])).to(device)


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


def unet_forward(unet, xt, t, cond, extra, in_channels: int):
    x = xt if extra is None else torch.cat([xt, extra], 1)
    x = with_coords(x, in_channels)  # (x, y) maps when the UNet takes them
    if cond is None:
        return unet(x, t).sample
    return unet(x, t, encoder_hidden_states=cond).sample


def train(cfg: Text2ImgConfig):
    apply_threads(cfg.threads)
    out = ensure_dir(cfg.out)
    task = cfg.task
    if task not in PIPELINE_CLASS:
        raise ValueError(f"unknown task {task!r}; one of {list(PIPELINE_CLASS)}")
    uses_text = task != "superres"
    acc = Accelerator()
    torch.manual_seed(cfg.seed)
    vae = AutoencoderKL.from_pretrained(cfg.autoencoder).float().eval().requires_grad_(False).to(acc.device)
    latents, meta = build_latent_cache(vae, cfg.num_scenes, Path(cfg.latent_cache or out / "latents.safetensors"),
                                       workers=cfg.workers)
    latents = latents.to(acc.device)
    tokenizer = build_tokenizer(cfg.max_length) if uses_text else None
    text_encoder = None
    if cfg.grounding_fraction > 0 and task != "text2img":
        raise ValueError("--grounding-fraction is for the text2img stage (one UNet for text and layout)")
    grounded = cfg.grounding_fraction > 0
    if cfg.bicubic_latent and task != "superres":
        raise ValueError("--bicubic-latent is for the superres stage")
    in_ch = (4 + EXTRA_CHANNELS[task] + (GROUNDING_CHANNELS if grounded else 0)
             + (COORD_CHANNELS if cfg.coord_channels else 0) + (4 if cfg.bicubic_latent else 0))
    if not uses_text:
        if cfg.init_from:
            from diffusers import UNet2DModel
            unet = UNet2DModel.from_pretrained(Path(cfg.init_from) / "unet").float()
            if unet.config.in_channels < in_ch:   # e.g. --bicubic-latent: its channels start at zero
                unet = widen_input(unet, in_ch)
        else:
            unet = build_unet2d(cfg, in_ch)
    elif cfg.init_from:  # e.g. inpainting from the text-to-image model: new input channels start at zero
        from transformers import CLIPTextModel
        unet = UNet2DConditionModel.from_pretrained(Path(cfg.init_from) / "unet").float()
        text_encoder = CLIPTextModel.from_pretrained(Path(cfg.init_from) / "text_encoder").float()
        if unet.config.in_channels < in_ch:
            # new channels go after the old ones, but before coordinate maps the model already takes
            had_coords = cfg.coord_channels and grounded and in_ch - unet.config.in_channels == GROUNDING_CHANNELS
            unet = widen_input(unet, in_ch, at=unet.config.in_channels - COORD_CHANNELS if had_coords else None)
        elif unet.config.in_channels > in_ch:
            raise ValueError(f"{cfg.init_from} takes {unet.config.in_channels} input channels, more than this "
                             f"task's {in_ch} (is --coord-channels missing?)")
    else:
        unet = build_unet(cfg, in_channels=in_ch)
        text_encoder = build_text_encoder(TextEncoderConfig(cfg.text_hidden, cfg.text_layers, 4, cfg.max_length),
                                          tokenizer)
    scheduler = noise_scheduler()
    modules = [unet] + ([text_encoder] if text_encoder is not None else [])
    params = [p for m in modules for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    prepared = acc.prepare(*modules, opt)
    unet, opt = prepared[0], prepared[-1]
    text_encoder = prepared[1] if text_encoder is not None else None
    emas = [EMAModel(acc.unwrap_model(m).parameters(), decay=cfg.ema_decay, use_ema_warmup=True, power=0.75)
            for m in prepared[:-1]]
    acc.register_for_checkpointing(*emas)
    ckpt = Checkpoint(acc, out)
    ckpt.resume()
    state = ckpt.state
    save_json(out / "config.json", config_dict(cfg))
    log = LossLog(out)
    scenes = eval_prompts(cfg.eval_prompts_per_form)
    ckpt_timer, sample_timer = Timer(cfg.checkpoint_minutes), Timer(cfg.sample_minutes)
    started = time.monotonic()
    gen = torch.Generator().manual_seed(cfg.seed + state["step"] * 7919 + acc.process_index)
    rng = random.Random(cfg.seed + state["step"] * 104729 + acc.process_index)
    captions = [m["caption"] for m in meta]

    def condition_text(i: int, r: float) -> str:
        """The token string for scene i: its caption, or its boxes (with the caption half the time);
        with grounding maps: the caption, or (boxes in the map) the caption a share of the time."""
        if grounded:
            if r >= cfg.grounding_fraction or r < cfg.grounding_fraction * cfg.grounding_caption:
                return captions[i]
            return ""
        if r >= cfg.layout_fraction:
            return captions[i]
        boxes = [(b["label"], b["box"]) for b in meta[i]["boxes"]]
        with_caption = r < cfg.layout_fraction / 2
        return layout_text(captions[i] if with_caption else "", boxes)

    def ema_pipeline():
        from ..pipelines import PIPELINES
        copies = [copy.deepcopy(acc.unwrap_model(m)) for m in prepared[:-1]]
        for e, m in zip(emas, copies):
            e.copy_to(m.parameters())
            m.eval()
        cls = PIPELINES[PIPELINE_CLASS[task]]
        if uses_text:
            return cls(vae=vae, text_encoder=copies[1], tokenizer=tokenizer, unet=copies[0], scheduler=scheduler)
        return cls(vae=vae, unet=copies[0], scheduler=scheduler)

    def export(dest: Path):
        p = ema_pipeline()
        export_model(dest, PIPELINE_CLASS[task], p.unet, getattr(p, "text_encoder", None), tokenizer, scheduler,
                     cfg.autoencoder)

    def evaluate():
        if not acc.is_main_process:
            return
        t0 = time.monotonic()
        pipe = ema_pipeline()
        if task == "text2img":
            metrics, images = measure_accuracy(pipe, scenes)
            if cfg.layout_fraction > 0 or grounded:
                metrics.update(measure_layout_accuracy(pipe, scenes[-cfg.eval_prompts_per_form:]))
        elif task == "inpaint":
            metrics, images = measure_inpaint(pipe, scenes)
        else:
            metrics, images = measure_superres(pipe, scenes, photos=cfg.photo_fraction > 0)
        save_grid(images[: 8 * len(CAPTION_FORMS)], out / "samples.png", cols=8, scale=3)
        (out / "samples.txt").write_text("\n".join(s.caption for s in scenes))
        log.add({"step": state["step"], **metrics, "eval_s": time.monotonic() - t0})
        log.plot(out / "loss.png", keys=["loss"] + sorted(metrics))
        acc.print(f"step {state['step']}: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))

    bar = tqdm(total=cfg.steps, initial=state["step"], disable=not acc.is_main_process, dynamic_ncols=True)
    t_last, n_last, loss_avg = time.monotonic(), 0, None
    for m in prepared[:-1]:
        m.train()
    while state["step"] < cfg.steps:
        step = state["step"]
        progress = step / cfg.steps   # cosine over the step budget, or the time budget if that ends first
        if cfg.max_minutes:
            progress = max(progress, min(1.0, (time.monotonic() - started) / (cfg.max_minutes * 60)))
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup) * (0.55 + 0.45 * math.cos(math.pi * progress))
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, len(latents), (cfg.batch_size,), generator=gen)
        x0 = latents[idx.to(latents.device)]  # (B, 4, 16, 16)
        cond = None
        if uses_text:
            drop = torch.rand(cfg.batch_size, generator=gen) < cfg.caption_dropout
            kind = torch.rand(cfg.batch_size, generator=gen)
            texts = ["" if d else condition_text(i, r) for i, d, r in zip(idx.tolist(), drop.tolist(), kind.tolist())]
            ids = tokenizer(texts, padding="max_length", max_length=cfg.max_length, truncation=True,
                            return_tensors="pt").input_ids.to(acc.device)
            cond = text_encoder(ids)[0]  # (B, L, D)
        if grounded:
            extra = grounding_batch(meta, idx.tolist(), kind.tolist(), cfg, rng).to(acc.device)
        elif task == "superres" and cfg.photo_fraction > 0:   # first k examples: photo crops instead of scenes
            k = round(cfg.batch_size * cfg.photo_fraction)
            z_p, low_p = photo_examples(vae, k, rng, acc.device, cfg.degrade_p, cfg.photo_rotate)
            x0 = torch.cat([z_p, x0[k:]])
            extra = torch.cat([low_p, extra_inputs(task, vae, idx[k:].tolist(), rng, acc.device, cfg.degrade_p)])
        else:
            extra = extra_inputs(task, vae, idx.tolist(), rng, acc.device, cfg.degrade_p)
        if cfg.bicubic_latent:
            with torch.no_grad():
                extra = torch.cat([extra, bicubic_latent(vae, extra)], 1)  # (B, 3 + 4, 16, 16)
        noise = torch.randn(x0.shape, generator=gen).to(acc.device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch_size,), generator=gen).to(acc.device)
        xt = scheduler.add_noise(x0, noise, t)
        pred = unet_forward(unet, xt, t, cond, extra, in_ch)
        w = min_snr_weights(scheduler, t, cfg.min_snr_gamma)
        loss = (F.mse_loss(pred, noise, reduction="none").mean((1, 2, 3)) * w).mean()
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        acc.clip_grad_norm_(params, 1.0)
        opt.step()
        for e, m in zip(emas, prepared[:-1]):
            e.step(acc.unwrap_model(m).parameters())
        state["step"] = step + 1
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        n_last += cfg.batch_size * acc.num_processes
        bar.update(1)
        if state["step"] % cfg.log_every == 0:
            now = time.monotonic()
            img_s = n_last / (now - t_last)
            t_last, n_last = now, 0
            if acc.is_main_process:
                log.add({"step": state["step"], "loss": loss_avg, "lr": lr, "img_s": img_s})
            bar.set_postfix(loss=f"{loss_avg:.4f}", img_s=f"{img_s:.0f}")
        if sample_timer.due():
            evaluate()
        if ckpt_timer.due():
            ckpt.save()
            if cfg.export and acc.is_main_process:
                export(out / "latest_export")
        if cfg.max_minutes and time.monotonic() - started > cfg.max_minutes * 60:
            acc.print("time limit reached; checkpointing")
            break
    bar.close()
    ckpt.save()
    evaluate()
    if cfg.export and acc.is_main_process:
        export(Path(cfg.export))
        acc.print(f"exported to {cfg.export}")


def widen_input(unet, in_channels: int, at: int | None = None):
    """A copy of `unet` taking `in_channels` inputs; the new input channels (inserted at input
    index `at`, default after the existing ones) start at zero, as Stable Diffusion inpainting
    was initialised from the text-to-image model."""
    cfg = dict(unet.config)
    cfg["in_channels"] = in_channels
    wide = type(unet).from_config(cfg)
    sd = unet.state_dict()
    w = sd["conv_in.weight"]  # (C, c_in, 3, 3)
    at = w.shape[1] if at is None else at
    new = torch.zeros(w.shape[0], in_channels - w.shape[1], *w.shape[2:])
    sd["conv_in.weight"] = torch.cat([w[:, :at], new, w[:, at:]], 1)
    wide.load_state_dict(sd)
    return wide


@torch.no_grad()
def measure_inpaint(pipe, scenes, steps: int = 25, guidance: float = 3.0) -> tuple[dict, np.ndarray]:
    """Mask one object of each scene; with the scene's caption the object must come back
    (judged by the detector on the whole image), and pixels outside the mask must not move."""
    from .common import psnr
    from .conditioning import random_mask
    try:
        from ..eval.metrics import judge_caption
    except ImportError:
        judge_caption = None
    from PIL import Image
    ok, outside, images = [], [], []
    for i, s in enumerate(scenes):
        m = random_mask(s, random.Random(EVAL_SEED0 + i), "object")
        out = pipe(s.caption, Image.fromarray(s.image), Image.fromarray((m * 255).astype(np.uint8)),
                   num_inference_steps=steps, guidance_scale=guidance, seeds=[EVAL_SEED0 + i]).images[0]
        a = np.asarray(out)
        images.append(a)
        outside.append(psnr(a[~m][None], s.image[~m][None]) if (~m).any() else 99.0)
        if judge_caption is not None:
            ok.append(bool(judge_caption(s, a)["correct"]))
    metrics = {"inpaint_outside_psnr": float(np.mean(outside))}
    if ok:
        metrics["acc_inpaint_object"] = float(np.mean(ok))
    return metrics, np.stack(images)


@torch.no_grad()
def measure_superres(pipe, scenes, steps: int = 25, photos: bool = False) -> tuple[dict, np.ndarray]:
    """PSNR of 4x super-resolution of bicubic-downsampled held-out scenes (and, with `photos`,
    held-out photo crops), against bicubic upsampling."""
    from PIL import Image
    from .common import psnr
    from .conditioning import degrade
    gt, sr, bic = [], [], []
    for i, s in enumerate(scenes):
        low = degrade(s.image, random.Random(i), bicubic_only=True)
        sr.append(np.asarray(pipe(Image.fromarray(low), num_inference_steps=steps, seeds=[EVAL_SEED0 + i]).images[0]))
        bic.append(np.asarray(Image.fromarray(low).resize((64, 64), Image.BICUBIC)))
        gt.append(s.image)
    gt, sr, bic = np.stack(gt), np.stack(sr), np.stack(bic)
    metrics = {"sr_psnr": psnr(gt, sr), "bicubic_psnr": psnr(gt, bic)}
    if photos:
        from ..data.photos import heldout_crops
        crops = heldout_crops(16)
        low = [degrade(c, random.Random(i), bicubic_only=True) for i, c in enumerate(crops)]
        sr_p = np.stack([np.asarray(pipe(Image.fromarray(lo), num_inference_steps=steps,
                                         seeds=[EVAL_SEED0 + i]).images[0]) for i, lo in enumerate(low)])
        bic_p = np.stack([np.asarray(Image.fromarray(lo).resize((64, 64), Image.BICUBIC)) for lo in low])
        metrics.update(sr_photo_psnr=psnr(crops, sr_p), bicubic_photo_psnr=psnr(crops, bic_p))
        sr = np.concatenate([sr, sr_p])
    return metrics, sr
