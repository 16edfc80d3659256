"""Stage 1 (paper §3.1): the KL-regularised perceptual-compression autoencoder, f = 4.

64x64x3 <-> 16x16x4. Generator step: L1 + perceptual + small KL + (after a warm-up) an
adaptively weighted patch-adversarial term. Discriminator step: hinge loss on real vs
reconstructed patches. Both steps are written out below. At the end the per-channel
latent statistics are measured on data and saved in the model's config
(`latents_mean`, `latents_std`), which is how the pipelines standardise latents.

    python -m ldm_core.train autoencoder --out runs/autoencoder --export models/shapes-autoencoder
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import AutoencoderKL
from tqdm.auto import tqdm

from ..data.photos import heldout_crops, random_crops
from ..data.shapes import render_batch
from ..pipelines.superres import back_project
from .common import (Checkpoint, LossLog, RunConfig, Timer, apply_threads, config_dict, ensure_dir, from_uint8, psnr,
                     save_grid, save_json, to_uint8)
from .losses import LPIPS, PatchDiscriminator, StructuralLoss, adaptive_weight, hinge_d_loss

HELDOUT_SEED0 = 10_000_000  # held-out scenes start here; training seeds stay below


@dataclass
class AutoencoderConfig(RunConfig):
    out: str = "runs/autoencoder"
    steps: int = 3000
    batch_size: int = 16
    lr: float = 5e-4
    channels: tuple[int, ...] = (32, 64, 128)  # one level per block; 3 levels = f 4
    latent_channels: int = 4
    layers_per_block: int = 1
    kl_weight: float = 1e-6
    perceptual_weight: float = 0.1
    lpips_weights: str = ""          # local LPIPS safetensors; empty = structural loss
    disc_start: int = 1500           # adversarial warm-up (generator steps before the GAN term)
    disc_weight: float = 0.05
    disc_lr: float = 2e-4
    export: str = ""                 # folder to write the final model to (diffusers format)
    export_fp16: bool = True
    init_from: str = ""              # start from an exported autoencoder
    freeze_encoder: bool = False     # train the decoder only: latents (and their statistics) stay fixed,
                                     # so a diffusion model can train on them meanwhile
    beta1: float = 0.5               # Adam betas of the generator (0.5, 0.9 as in the paper's GAN setup)
    beta2: float = 0.9
    photo_fraction: float = 0.0      # share of each batch that is natural-photo crops (ldm_core.data.photos)
    back_projection: int = 0         # > 0: for the super-resolution autoencoder, the reconstruction term is
                                     # the per-image log-MSE of the output back-projected onto its 4x bicubic
                                     # downsampling (what SuperResPipeline returns), plus 0.1 x the usual terms


def build_autoencoder(cfg: AutoencoderConfig) -> AutoencoderKL:
    n = len(cfg.channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.channels), layers_per_block=cfg.layers_per_block,
        latent_channels=cfg.latent_channels, norm_num_groups=min(16, cfg.channels[0]), sample_size=64,
    )


class _Reconstruct(torch.nn.Module):
    """One forward through the autoencoder that also returns the posterior (for DDP)."""

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae

    def forward(self, x):
        post = self.vae.encode(x).latent_dist
        return self.vae.decode(post.sample()).sample, post.mean, post.logvar


def back_projected_loss(xr: torch.Tensor, x: torch.Tensor, iterations: int, factor: int = 4) -> torch.Tensor:
    """Mean over images of log(MSE) after back-projecting the reconstruction `xr` onto the
    `factor`x bicubic downsampling of `x` (both (B, 3, H, W) in [-1, 1]): mean PSNR, as a loss. The
    low frequencies that back-projection restores cost nothing, so the decoder spends itself on detail."""
    low = F.interpolate(x, scale_factor=1 / factor, mode="bicubic", antialias=True, align_corners=False)  # (B, 3, h, w)
    mse = (back_project(xr, low, iterations) - x).pow(2).mean((1, 2, 3))  # (B,)
    return torch.log(mse + 1e-5).mean()


def heldout_images(n: int = 256) -> np.ndarray:
    return render_batch(range(HELDOUT_SEED0, HELDOUT_SEED0 + n))[0]


@torch.no_grad()
def reconstruct(vae: AutoencoderKL, images: np.ndarray, batch: int = 64) -> np.ndarray:
    """Encode (posterior mode) and decode uint8 images, returning uint8."""
    out = []
    p = next(vae.parameters())
    for i in range(0, len(images), batch):
        x = from_uint8(images[i:i + batch]).to(p.device, p.dtype)
        out.append(to_uint8(vae.decode(vae.encode(x).latent_dist.mode()).sample))
    return np.concatenate(out)


@torch.no_grad()
def latent_stats(vae: AutoencoderKL, n: int = 2048, batch: int = 128) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of posterior-mode latents over `n` training scenes."""
    zs = []
    p = next(vae.parameters())
    for i in range(0, n, batch):
        x = from_uint8(render_batch(range(i, i + batch))[0]).to(p.device, p.dtype)
        zs.append(vae.encode(x).latent_dist.mode().float())
    z = torch.cat(zs)  # (N, C, h, w)
    return z.mean((0, 2, 3)).tolist(), z.std((0, 2, 3)).tolist()


def train(cfg: AutoencoderConfig) -> AutoencoderKL:
    apply_threads(cfg.threads)
    out = ensure_dir(cfg.out)
    acc = Accelerator()
    torch.manual_seed(cfg.seed)
    vae = AutoencoderKL.from_pretrained(cfg.init_from).float() if cfg.init_from else build_autoencoder(cfg)
    disc = PatchDiscriminator()
    if cfg.freeze_encoder:
        vae.encoder.requires_grad_(False)
        vae.quant_conv.requires_grad_(False)
    perceptual = LPIPS.from_file(cfg.lpips_weights) if cfg.lpips_weights else StructuralLoss()
    opt_g = torch.optim.Adam([p for p in vae.parameters() if p.requires_grad], lr=cfg.lr,
                             betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.9))
    ae, disc, perceptual, opt_g, opt_d = acc.prepare(_Reconstruct(vae), disc, perceptual, opt_g, opt_d)
    ckpt = Checkpoint(acc, out)
    ckpt.resume()
    state = ckpt.state
    save_json(out / "config.json", config_dict(cfg))
    log = LossLog(out)
    heldout = heldout_images(64)
    heldout_p = heldout_crops(64) if cfg.photo_fraction > 0 else None
    last_layer = vae.decoder.conv_out.weight
    ckpt_timer, sample_timer = Timer(cfg.checkpoint_minutes), Timer(cfg.sample_minutes)
    started = time.monotonic()
    timed_out = False
    world = acc.num_processes

    def write_samples():
        if not acc.is_main_process:
            return
        vae.eval()
        rec = reconstruct(vae, heldout)
        row = {"step": state["step"], "heldout_psnr": psnr(heldout, rec)}
        grid = [heldout[:16], rec[:16]]
        if cfg.photo_fraction > 0:
            rec_p = reconstruct(vae, heldout_p)
            row["heldout_photo_psnr"] = psnr(heldout_p, rec_p)
            grid += [heldout_p[:16], rec_p[:16]]
        vae.train()
        save_grid(np.concatenate(grid), out / "samples.png", cols=16)
        log.add(row)
        log.plot(out / "loss.png")

    bar = tqdm(total=cfg.steps, initial=state["step"], disable=not acc.is_main_process, dynamic_ncols=True)
    t_last, n_last = time.monotonic(), 0
    while state["step"] < cfg.steps:
        step = state["step"]
        lr = cfg.lr * min(1.0, (step + 1) / 100) * (0.5 * (1 + math.cos(math.pi * step / cfg.steps)) * 0.9 + 0.1)
        for g in opt_g.param_groups:
            g["lr"] = lr
        # each process renders its own slice of the deterministic seed stream
        s0 = (step * world + acc.process_index) * cfg.batch_size
        images = render_batch(range(s0, s0 + cfg.batch_size))[0]  # (B, 64, 64, 3)
        if cfg.photo_fraction > 0:
            k = round(cfg.batch_size * cfg.photo_fraction)
            images[:k] = random_crops(k, np.random.default_rng(cfg.seed * 1_000_003 + s0))
        x = from_uint8(images).to(acc.device)  # (B, 3, 64, 64)

        # ---- generator (autoencoder) step ----
        xr, mean, logvar = ae(x)  # (B, 3, 64, 64), (B, 4, 16, 16) x2
        rec = F.l1_loss(xr, x)
        perc = perceptual(xr, x)
        rec_total = rec + cfg.perceptual_weight * perc
        bp = torch.zeros((), device=acc.device)
        if cfg.back_projection:
            bp = back_projected_loss(xr, x, cfg.back_projection, factor=2 ** (len(cfg.channels) - 1))
            rec_total = 0.1 * rec_total + bp
        kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).sum((1, 2, 3)).mean() / (x.shape[2] * x.shape[3])
        loss = rec_total + cfg.kl_weight * kl
        use_gan = step >= cfg.disc_start
        g_loss = d_w = torch.zeros((), device=acc.device)
        if use_gan:
            disc.requires_grad_(False)
            g_loss = -disc(xr).mean()
            d_w = adaptive_weight(rec_total, g_loss, last_layer) * cfg.disc_weight
            loss = loss + d_w * g_loss
        opt_g.zero_grad(set_to_none=True)
        acc.backward(loss)
        opt_g.step()

        # ---- discriminator step ----
        d_loss = torch.zeros((), device=acc.device)
        if use_gan:
            disc.requires_grad_(True)
            d_loss = hinge_d_loss(disc(x), disc(xr.detach()))
            opt_d.zero_grad(set_to_none=True)
            acc.backward(d_loss)
            opt_d.step()

        state["step"] = step + 1
        n_last += cfg.batch_size * world
        bar.update(1)
        if state["step"] % cfg.log_every == 0 or state["step"] == cfg.steps:
            now = time.monotonic()
            img_s = n_last / (now - t_last)
            t_last, n_last = now, 0
            row = {"step": state["step"], "loss_l1": rec.item(), "loss_perceptual": perc.item(),
                   "loss_bp": bp.item(), "kl": kl.item(),
                   "loss_g": g_loss.item(), "d_weight": float(d_w), "loss_d": d_loss.item(), "img_s": img_s}
            if acc.is_main_process:
                log.add(row)
            bar.set_postfix(l1=f"{rec.item():.4f}", perc=f"{perc.item():.3f}", d=f"{d_loss.item():.3f}",
                            img_s=f"{img_s:.0f}")
        if sample_timer.due():
            write_samples()
        if ckpt_timer.due():
            ckpt.save()
        if cfg.max_minutes and time.monotonic() - started > cfg.max_minutes * 60:
            acc.print("time limit reached; checkpointing")
            timed_out = True
            break
    bar.close()
    ckpt.save()
    write_samples()
    model = vae.eval()
    if cfg.export and acc.is_main_process and (state["step"] >= cfg.steps or timed_out):
        export(model, cfg, steps=state["step"])
    return model


def export(vae: AutoencoderKL, cfg: AutoencoderConfig, steps: int | None = None) -> Path:
    """Measure latent statistics, write the model (safetensors) and its held-out PSNR."""
    mean, std = latent_stats(vae)
    vae.register_to_config(latents_mean=mean, latents_std=std, scaling_factor=1.0)
    dest = ensure_dir(cfg.export)
    model = vae.to(torch.float16) if cfg.export_fp16 else vae
    model.save_pretrained(dest, safe_serialization=True)
    test = heldout_images(256)
    rec = reconstruct(AutoencoderKL.from_pretrained(dest).float().eval(), test)
    report = {"heldout_psnr_db": psnr(test, rec), "heldout_scenes": len(test), "latents_mean": mean,
              "latents_std": std, "steps": steps or cfg.steps}
    if cfg.photo_fraction > 0:
        crops = heldout_crops(256)
        report["heldout_photo_psnr_db"] = psnr(crops, reconstruct(AutoencoderKL.from_pretrained(dest).float().eval(),
                                                                  crops))
    save_json(dest / "eval.json", report)
    print(f"exported to {dest}: held-out PSNR {report['heldout_psnr_db']:.2f} dB")
    return dest
