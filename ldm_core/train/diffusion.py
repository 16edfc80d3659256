"""The machinery the three diffusion stages (text2img, inpaint, superres) share, on cached latents
(`latents.py`): a stage builds its networks, its batches (`Batch`) and its evaluation, and hands
them to `fit` as a `Stage`; `fit` trains the networks on the min-SNR-weighted noise-prediction
loss, keeps EMA copies of them (what is sampled and exported) and writes the export
(`export_model`).
"""
from __future__ import annotations

import contextlib
import copy
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDPMScheduler
from diffusers.training_utils import EMAModel

from ..data.images import save_grid
from ..data.shapes import CAPTION_FORMS, sample_scene
from ..pipelines.common import with_coords
from .common import RunConfig, ensure_dir, save_json
from .latents import Latents
from .loop import Budget, cosine_lr, resume, step_loop

EVAL_SEED0 = 20_000_000   # held-out scenes measured during training; training scenes stay below


@dataclass
class DiffusionConfig(RunConfig):
    """Options every diffusion stage has (each stage's config extends it)."""
    steps: int = 20000
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 200                  # linear warm-up steps, then cosine over the step (or time) budget
    autoencoder: str = "models/shapes-autoencoder"
    num_scenes: int = 60000            # cached training scenes (latents computed once)
    latent_cache: str = ""             # reuse another run's latents.safetensors (same autoencoder!)
    workers: int = 1                   # processes rendering the latent cache
    channels: tuple[int, ...] = (64, 128, 192)
    layers_per_block: int = 1
    head_dim: int = 32
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.999
    eval_prompts_per_form: int = 8     # accuracy measured on this many prompts per caption form
    init_from: str = ""                # start from an exported model folder (e.g. the committed one)
    export: str = ""


def noise_scheduler() -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                         beta_end=0.012, prediction_type="epsilon", clip_sample=False)


def min_snr_weights(scheduler: DDPMScheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma loss weights for epsilon prediction (Hang et al. 2023)."""
    ac = scheduler.alphas_cumprod.to(t.device)[t]
    snr = ac / (1 - ac)
    return torch.clamp(snr, max=gamma) / snr


def eval_scenes(per_form: int) -> list:
    """The held-out scenes every diffusion stage is measured on: `per_form` of each caption form."""
    return [sample_scene(EVAL_SEED0 + i * 7 + k, form) for k, form in enumerate(CAPTION_FORMS) for i in range(per_form)]


@dataclass
class Batch:
    x0: torch.Tensor                    # (B, C, h, w) target latents
    ids: torch.Tensor | None = None     # (B, L) token ids, read through cross-attention
    extra: torch.Tensor | None = None   # (B, E, h, w) conditioning concatenated to the noisy latents
    aux: object = None                  # what the stage's auxiliary loss reads (e.g. which tokens name which box)


@dataclass
class Weights:
    """EMA copies of the trained networks with what samples them: stages build pipelines from these."""
    vae: torch.nn.Module
    unet: torch.nn.Module
    scheduler: DDPMScheduler
    text_encoder: torch.nn.Module | None = None
    tokenizer: object = None


@dataclass
class Stage:
    """What a diffusion stage hands to `fit`."""
    pipeline: type                      # runs the model; its name goes into the export's model_index.json
    unet: torch.nn.Module
    batch: Callable[[torch.Tensor, torch.Generator, random.Random], Batch]   # (scene ids, gen, rng) -> Batch
    evaluate: Callable[[Weights, list], tuple[dict, np.ndarray]]           # -> (metrics, uint8 images)
    text_encoder: torch.nn.Module | None = None   # trained with the UNet when given
    tokenizer: object = None
    aux_loss: object = None             # e.g. AttentionLoss: recording() around the forward, then loss(batch.aux)


def export_model(dest: Path, pipeline_class: str, w: Weights, autoencoder: str, fp16: bool = True) -> None:
    """Write a diffusers-format folder the studio loads; the autoencoder is referenced, not copied."""
    dest = ensure_dir(dest)
    dtype = torch.float16 if fp16 else torch.float32
    copy.deepcopy(w.unet).to(dtype).save_pretrained(dest / "unet", safe_serialization=True)
    index = {"_class_name": pipeline_class, "vae": ["diffusers", "AutoencoderKL"],
             "unet": ["diffusers", type(w.unet).__name__], "scheduler": ["diffusers", "DDPMScheduler"],
             "_shared": {"vae": Path(autoencoder).name}}
    if w.text_encoder is not None:
        copy.deepcopy(w.text_encoder).to(dtype).save_pretrained(dest / "text_encoder", safe_serialization=True)
        w.tokenizer.save_pretrained(dest / "tokenizer")
        index.update(text_encoder=["transformers", "CLIPTextModel"],
                     tokenizer=["transformers", "PreTrainedTokenizerFast"])
    w.scheduler.save_pretrained(dest / "scheduler")
    save_json(dest / "model_index.json", index)


class _Diffusion:
    """One diffusion training run: the prepared networks, their EMA, the optimizer and the streams."""

    def __init__(self, cfg: DiffusionConfig, acc: Accelerator, out: Path, data: Latents, stage: Stage):
        self.cfg = cfg
        self.acc = acc
        self.out = out
        self.data = data
        self.stage = stage
        self.scheduler = noise_scheduler()
        modules = [stage.unet] + ([stage.text_encoder] if stage.text_encoder is not None else [])
        self.params = [p for m in modules for p in m.parameters()]
        opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=0.01)
        *self.modules, self.opt = acc.prepare(*modules, opt)
        self.in_channels = stage.unet.config.in_channels
        self.emas = [EMAModel(acc.unwrap_model(m).parameters(), decay=cfg.ema_decay, use_ema_warmup=True, power=0.75)
                     for m in self.modules]
        acc.register_for_checkpointing(*self.emas)
        self.ckpt, self.log = resume(acc, out, cfg)
        self.scenes = eval_scenes(cfg.eval_prompts_per_form)
        self.budget = Budget(cfg.steps, cfg.max_minutes, cfg.cpu_clock)
        step = self.ckpt.state["step"]
        self.gen = torch.Generator().manual_seed(cfg.seed + step * 7919 + acc.process_index)
        self.rng = random.Random(cfg.seed + step * 104729 + acc.process_index)
        self.loss_avg: float | None = None

    def weights(self) -> Weights:
        copies = [copy.deepcopy(self.acc.unwrap_model(m)) for m in self.modules]
        for e, m in zip(self.emas, copies):
            e.copy_to(m.parameters())
            m.eval()
        return Weights(vae=self.data.vae, unet=copies[0], scheduler=self.scheduler,
                       text_encoder=copies[1] if len(copies) > 1 else None, tokenizer=self.stage.tokenizer)

    def evaluate(self) -> None:
        if not self.acc.is_main_process:
            return
        t0 = time.monotonic()
        metrics, images = self.stage.evaluate(self.weights(), self.scenes)
        save_grid(images[: 8 * len(CAPTION_FORMS)], self.out / "samples.png", cols=8, scale=3)
        (self.out / "samples.txt").write_text("\n".join(s.caption for s in self.scenes))
        step = self.ckpt.state["step"]
        self.log.add({"step": step, **metrics, "eval_s": time.monotonic() - t0})
        self.log.plot(self.out / "loss.png", keys=["loss"] + sorted(metrics))
        self.acc.print(f"step {step}: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))

    def export(self, dest: Path) -> None:
        if self.acc.is_main_process:
            export_model(dest, self.stage.pipeline.__name__, self.weights(), self.cfg.autoencoder)

    def train_step(self, step: int) -> dict:
        cfg = self.cfg
        acc = self.acc
        lr = cosine_lr(cfg.lr, step, cfg.warmup, self.budget.progress(step))
        for g in self.opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, len(self.data.latents), (cfg.batch_size,), generator=self.gen)
        b = self.stage.batch(idx, self.gen, self.rng)
        cond = self.modules[1](b.ids)[0] if b.ids is not None else None  # (B, L, D)
        noise = torch.randn(b.x0.shape, generator=self.gen).to(acc.device)
        t = torch.randint(0, self.scheduler.config.num_train_timesteps, (cfg.batch_size,),
                          generator=self.gen).to(acc.device)
        x = self.scheduler.add_noise(b.x0, noise, t)
        x = with_coords(x if b.extra is None else torch.cat([x, b.extra], 1), self.in_channels)
        aux = self.stage.aux_loss
        with aux.recording() if aux is not None else contextlib.nullcontext():
            pred = (self.modules[0](x, t) if cond is None else self.modules[0](x, t, encoder_hidden_states=cond)).sample
        w = min_snr_weights(self.scheduler, t, cfg.min_snr_gamma)
        loss = (F.mse_loss(pred, noise, reduction="none").mean((1, 2, 3)) * w).mean()
        row = {}
        if aux is not None:
            extra = aux.loss(b.aux)
            loss = loss + extra
            row["loss_aux"] = extra.item()
        self.opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        acc.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        for e, m in zip(self.emas, self.modules):
            e.step(acc.unwrap_model(m).parameters())
        self.loss_avg = loss.item() if self.loss_avg is None else 0.98 * self.loss_avg + 0.02 * loss.item()
        return {"loss": self.loss_avg, "lr": lr, **row}


def fit(cfg: DiffusionConfig, acc: Accelerator, out: Path, data: Latents, stage: Stage, run_class=None) -> None:
    """Train `stage`'s networks on batches it builds until the step or time budget is spent, then
    export the EMA weights to `cfg.export` (and to <out>/latest_export at every checkpoint).
    `run_class`: a `_Diffusion` subclass with an export of its own (train/class_models.py)."""
    run = (run_class or _Diffusion)(cfg, acc, out, data, stage)
    for m in run.modules:
        m.train()
    step_loop(acc, cfg, run.ckpt, run.log, run.budget, run.train_step, run.evaluate,
              after_checkpoint=(lambda: run.export(out / "latest_export")) if cfg.export else None)
    if cfg.export:
        run.export(Path(cfg.export))
        acc.print(f"exported to {cfg.export}")
