"""The paper's central experiment in miniature (Rombach et al. 2022, §4.1, Fig. 6 and 7): how the
autoencoder's downsampling factor f trades sampling speed and training efficiency against quality.

For each f in {1, 2, 4, 8, 16} on 64x64 Shapes World scenes:
  1. an autoencoder (KL, the project's own trainer `ldm_core.train.autoencoder`, no GAN term in so
     short a budget) with log2(f) downsamplings to (64/f)^2 x c latents, trained for the same
     budget of CPU time; f = 1 has none: diffusion runs on the pixels;
  2. the same text-conditioned UNet (the built-in model's architecture: 3 levels, cross-attention
     to a small transformer text encoder trained jointly) on those latents, for the same budget of
     CPU time of this process (evaluation excluded), so sharing the machine does not move it;
  3. at `eval_points` points of that budget: caption accuracy per form (judged by the detector)
     and classifier-FID against ground-truth renders; at the end, sampling throughput (25 steps,
     classifier-free guidance, one batch) and training throughput.

Resumable: every f keeps its autoencoder, latent cache, checkpoint and results under <out>/f<f>/;
a finished f is not run again. `report.py` turns <out>/f*/results.json into the table and plots.

    python -m ldm_core.experiments f-tradeoff --docs docs     # 6 + 4 CPU-minutes per f
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL

from ..data.images import from_uint8, save_grid
from ..data.judge import judge_caption
from ..data.shapes import CAPTION_FORMS, render_batch, sample_scene
from ..eval.features import features, fid
from ..train.autoencoder import AutoencoderConfig
from ..train.autoencoder import train as train_autoencoder
from .latent_ldm import Model, Space, Trainer, sample

LATENT_CHANNELS = {1: 3, 2: 3, 4: 3, 8: 4, 16: 8}     # c per f (f = 1: RGB pixels)
AE_WIDTHS = (16, 32, 64, 64, 64)                       # autoencoder channels per level: log2(f) + 1 levels
EVAL_SEED0 = 22_000_000                                # held-out prompts
REF_SEED0 = 22_500_000                                 # FID reference renders


@dataclass
class FTradeoffConfig:
    out: str = "runs/f-tradeoff"
    factors: tuple[int, ...] = (16, 8, 4, 2, 1)   # cheapest first
    budget_minutes: float = 6.0        # LDM training per f: CPU-minutes of this process
    ae_budget_minutes: float = 4.0     # autoencoder training per f: CPU-minutes of this process
    eval_points: int = 3               # evaluations spread evenly over the LDM budget
    eval_per_form: int = 4             # held-out prompts per caption form at each evaluation ...
    final_per_form: int = 8            # ... and at the last one
    fid_reference: int = 512           # ground-truth renders FID compares against
    num_scenes: int = 20000            # cached training scenes
    batch_size: int = 32
    ae_batch_size: int = 8
    lr: float = 1e-3
    warmup: int = 50
    channels: tuple[int, ...] = (32, 64, 64)      # the built-in model's layout at half its width
    text_hidden: int = 128
    text_layers: int = 3
    head_dim: int = 32
    layers_per_block: int = 1
    caption_dropout: float = 0.1
    max_length: int = 24               # caption tokens (the longest caption is 15)
    sample_steps: int = 25
    guidance: float = 4.0
    throughput_batch: int = 16
    threads: int = 1
    seed: int = 0
    checkpoint_minutes: float = 3.0
    smoke: bool = False                # a few steps of everything, tiny sizes: checks the code path

    def __post_init__(self):
        if self.smoke:
            self.budget_minutes = 0.03
            self.ae_budget_minutes = 0.0
            self.eval_points = 2
            self.eval_per_form = 1
            self.final_per_form = 1
            self.fid_reference = 16
            self.num_scenes = 64
            self.batch_size = 4
            self.channels = (32, 32, 32)
            self.throughput_batch = 2
            self.sample_steps = 3
        bad = [f for f in self.factors if f not in LATENT_CHANNELS]
        if bad:
            raise ValueError(f"factors {bad} not supported; choose from {sorted(LATENT_CHANNELS)}")


# ------------------------------------------------------------------ stage 1: the autoencoder

def autoencoder_for(cfg: FTradeoffConfig, f: int, run: Path) -> tuple[Space, dict]:
    """Train (or reuse) the autoencoder of factor f; its space and its held-out PSNR."""
    if f == 1:
        x = from_uint8(render_batch(range(64 if cfg.smoke else 2048))[0])
        space = Space(1, None, x.mean((0, 2, 3), keepdim=True), x.std((0, 2, 3), keepdim=True))
        return space, {"ae_psnr": float("inf"), "ae_params": 0, "ae_steps": 0}
    export = run / "autoencoder"
    levels = int(math.log2(f)) + 1
    acfg = AutoencoderConfig(out=str(run / "ae-run"), steps=3 if cfg.smoke else 10**7, batch_size=cfg.ae_batch_size,
                             channels=AE_WIDTHS[:levels], latent_channels=LATENT_CHANNELS[f], disc_start=10**9,
                             max_minutes=cfg.ae_budget_minutes, cpu_clock=True, sample_minutes=10**6, log_every=50,
                             stats_scenes=64 if cfg.smoke else 2048, heldout_scenes=16 if cfg.smoke else 256,
                             checkpoint_minutes=cfg.checkpoint_minutes, threads=cfg.threads, seed=cfg.seed,
                             export=str(export), export_fp16=False)
    if not (export / "eval.json").exists():
        train_autoencoder(acfg)
    vae = AutoencoderKL.from_pretrained(export).float().eval().requires_grad_(False)
    c = LATENT_CHANNELS[f]
    space = Space(f, vae, torch.tensor(vae.config.latents_mean).view(1, c, 1, 1),
                  torch.tensor(vae.config.latents_std).view(1, c, 1, 1))
    ev = json.loads((export / "eval.json").read_text())
    return space, {"ae_psnr": ev["heldout_psnr_db"], "ae_params": sum(p.numel() for p in vae.parameters()),
                   "ae_steps": ev["steps"]}


def latent_cache(cfg: FTradeoffConfig, space: Space, run: Path) -> tuple[torch.Tensor, list[str], float]:
    """(N, c, 64/f, 64/f) standardised latents of training scenes 0..N-1, their captions, seconds to encode."""
    path = run / "latents.pt"
    if path.exists():
        d = torch.load(path)
        return d["latents"].float(), d["captions"], d["seconds"]
    t0 = time.monotonic()
    lat = []
    captions = []
    for i in range(0, cfg.num_scenes, 256):
        images, scenes = render_batch(range(i, min(cfg.num_scenes, i + 256)))
        lat.append(space.encode(images).half())
        captions += [s.caption for s in scenes]
    latents = torch.cat(lat)
    seconds = time.monotonic() - t0
    torch.save({"latents": latents, "captions": captions, "seconds": seconds}, path)
    return latents.float(), captions, seconds


# ------------------------------------------------------------------ stage 2: the diffusion model

def eval_prompts(per_form: int) -> list:
    return [sample_scene(EVAL_SEED0 + 11 * i + k, form) for k, form in enumerate(CAPTION_FORMS)
            for i in range(per_form)]


def evaluate(cfg: FTradeoffConfig, m: Model, ref_features: np.ndarray, per_form: int) -> tuple[dict, np.ndarray]:
    """Caption accuracy per form, the share of asked objects found (partial credit), and
    classifier-FID of the held-out prompts' samples; and the samples."""
    scenes = eval_prompts(per_form)
    images = []
    for i in range(0, len(scenes), 16):
        chunk = scenes[i:i + 16]
        images.append(sample(m, [s.caption for s in chunk], [EVAL_SEED0 + i + j for j in range(len(chunk))],
                             cfg.sample_steps, cfg.guidance))
    images = np.concatenate(images)
    acc: dict[str, list[bool]] = {}
    found = []
    for s, im in zip(scenes, images):
        j = judge_caption(s, im)
        acc.setdefault(s.form, []).append(bool(j["correct"]))
        found.append(j["objects_found"])
    row = {f"acc_{k}": float(np.mean(v)) for k, v in acc.items()}
    row["acc_mean"] = float(np.mean([row[f"acc_{k}"] for k in CAPTION_FORMS]))
    row["objects_found"] = float(np.mean(found))
    row["fid"] = fid(features(images), ref_features)
    row["n_prompts"] = len(scenes)
    return row, images


def train_ldm(cfg: FTradeoffConfig, tr: Trainer, ref_features: np.ndarray, log) -> None:
    """Train until the CPU budget is spent, evaluating at each of `eval_points` equal shares of it."""
    budget = 60 * cfg.budget_minutes
    p = tr.progress
    last_save = time.monotonic()
    while len(p.evals) < cfg.eval_points:
        due = budget * (len(p.evals) + 1) / cfg.eval_points
        while p.cpu_seconds < due:
            c0 = time.process_time()
            loss = tr.step()
            p.cpu_seconds += time.process_time() - c0
            if p.step % 25 == 0:
                log(f"step {p.step}: loss {loss:.4f}, {p.cpu_seconds / 60:.2f} CPU-min")
            if time.monotonic() - last_save > 60 * cfg.checkpoint_minutes:
                tr.save()
                last_save = time.monotonic()
        last = len(p.evals) + 1 == cfg.eval_points
        metrics, images = evaluate(cfg, tr.ema_model(), ref_features, cfg.final_per_form if last else cfg.eval_per_form)
        save_grid(images, tr.path.parent / f"samples-{len(p.evals) + 1}.png", cols=2 * cfg.final_per_form)
        row = {"step": p.step, "cpu_minutes": p.cpu_seconds / 60, "images_seen": p.images, **metrics}
        p.evals.append(row)
        log(f"eval {len(p.evals)}/{cfg.eval_points}: " + ", ".join(f"{k} {v:.3g}" for k, v in row.items()))
        tr.save()


def sampling_throughput(cfg: FTradeoffConfig, m: Model) -> dict:
    """Images per second (and per CPU-second) at `sample_steps` steps with guidance, one batch after a warm-up."""
    prompts = [s.caption for s in eval_prompts(math.ceil(cfg.throughput_batch / 4))][:cfg.throughput_batch]
    sample(m, prompts[:1], [0], 2, cfg.guidance)
    w0 = time.perf_counter()
    c0 = time.process_time()
    sample(m, prompts, list(range(len(prompts))), cfg.sample_steps, cfg.guidance)
    wall = time.perf_counter() - w0
    cpu = time.process_time() - c0
    return {"sample_images_per_s": len(prompts) / wall, "sample_images_per_cpu_s": len(prompts) / cpu}


def run_factor(cfg: FTradeoffConfig, f: int, ref_features: np.ndarray) -> dict:
    """Everything for one f; cached in <out>/f<f>/results.json."""
    run = Path(cfg.out) / f"f{f}"
    done = run / "results.json"
    if done.exists():
        return json.loads(done.read_text())
    run.mkdir(parents=True, exist_ok=True)

    def log(msg: str) -> None:
        print(f"[f={f}] {msg}", flush=True)

    space, res = autoencoder_for(cfg, f, run)
    log(f"autoencoder: held-out PSNR {res['ae_psnr']:.2f} dB")
    latents, captions, enc_s = latent_cache(cfg, space, run)
    tr = Trainer(cfg, space, latents, captions, run)
    log(f"latents {tuple(latents.shape[1:])}, UNet {tr.n_params / 1e6:.2f} M parameters")
    train_ldm(cfg, tr, ref_features, log)
    p = tr.progress
    res.update(f=f, latent_shape=list(latents.shape[1:]), unet_params=tr.n_params, encode_seconds=enc_s,
               steps=p.step, train_cpu_minutes=p.cpu_seconds / 60, train_images_per_cpu_s=p.images / p.cpu_seconds,
               evals=p.evals, **sampling_throughput(cfg, tr.ema_model()))
    done.write_text(json.dumps(res, indent=2))
    return res


def run(cfg: FTradeoffConfig) -> list[dict]:
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    ref = features(render_batch(range(REF_SEED0, REF_SEED0 + cfg.fid_reference))[0])
    return [run_factor(cfg, f, ref) for f in cfg.factors]
