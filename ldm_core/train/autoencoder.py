"""Stage 1 (paper §3.1): the KL-regularised perceptual-compression autoencoder, f = 4.

64x64x3 <-> 16x16x4. Generator step: L1 + perceptual + small KL + (after a warm-up) an
adaptively weighted patch-adversarial term. Discriminator step: hinge loss on real vs
reconstructed patches. Both steps are written out below. At the end the per-channel
latent statistics are measured on data and saved in the model's config
(`latents_mean`, `latents_std`), which is how the pipelines standardise latents.

    python -m ldm_core.train autoencoder --out runs/autoencoder --export models/shapes-autoencoder
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import AutoencoderKL

from ..data.images import from_uint8, psnr, save_grid, to_uint8
from ..data.photos import heldout_crops, random_crops
from ..data.shapes import render_batch
from ..pipelines.superres import back_project
from .common import LossLog, RunConfig, ensure_dir, save_json
from .loop import Budget, cosine_lr, resume, start, step_loop
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
    stats_scenes: int = 2048         # training scenes the exported latent statistics are measured on
    heldout_scenes: int = 256        # held-out scenes the exported model's PSNR (eval.json) is measured on
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


class _Parts:
    """What one autoencoder training step works on (the networks and optimizers prepared by accelerate)."""

    def __init__(self, cfg: AutoencoderConfig, acc: Accelerator, vae: AutoencoderKL):
        disc = PatchDiscriminator()
        if cfg.freeze_encoder:
            vae.encoder.requires_grad_(False)
            vae.quant_conv.requires_grad_(False)
        perceptual = LPIPS.from_file(cfg.lpips_weights) if cfg.lpips_weights else StructuralLoss()
        opt_g = torch.optim.Adam([p for p in vae.parameters() if p.requires_grad], lr=cfg.lr,
                                 betas=(cfg.beta1, cfg.beta2))
        opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.disc_lr, betas=(0.5, 0.9))
        self.ae, self.disc, self.perceptual, self.opt_g, self.opt_d = acc.prepare(
            _Reconstruct(vae), disc, perceptual, opt_g, opt_d)
        self.last_layer = vae.decoder.conv_out.weight


def batch_images(cfg: AutoencoderConfig, acc: Accelerator, step: int) -> np.ndarray:
    """(B, 64, 64, 3) uint8: this process's slice of the deterministic scene stream at `step`, its
    first `photo_fraction` replaced by photo crops."""
    s0 = (step * acc.num_processes + acc.process_index) * cfg.batch_size
    images = render_batch(range(s0, s0 + cfg.batch_size))[0]
    if cfg.photo_fraction > 0:
        k = round(cfg.batch_size * cfg.photo_fraction)
        images[:k] = random_crops(k, np.random.default_rng(cfg.seed * 1_000_003 + s0))
    return images


def train_step(cfg: AutoencoderConfig, acc: Accelerator, m: _Parts, step: int) -> dict:
    """One generator (autoencoder) step and, after `disc_start`, one discriminator step."""
    for g in m.opt_g.param_groups:
        g["lr"] = cosine_lr(cfg.lr, step, 100, step / cfg.steps)
    x = from_uint8(batch_images(cfg, acc, step)).to(acc.device)  # (B, 3, 64, 64)

    # ---- generator (autoencoder) step ----
    xr, mean, logvar = m.ae(x)  # (B, 3, 64, 64), (B, 4, 16, 16) x2
    rec = F.l1_loss(xr, x)
    perc = m.perceptual(xr, x)
    rec_total = rec + cfg.perceptual_weight * perc
    bp = torch.zeros((), device=acc.device)
    if cfg.back_projection:
        bp = back_projected_loss(xr, x, cfg.back_projection, factor=2 ** (len(cfg.channels) - 1))
        rec_total = 0.1 * rec_total + bp
    kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).sum((1, 2, 3)).mean() / (x.shape[2] * x.shape[3])
    loss = rec_total + cfg.kl_weight * kl
    use_gan = step >= cfg.disc_start
    g_loss = torch.zeros((), device=acc.device)
    d_w = torch.zeros((), device=acc.device)
    if use_gan:
        m.disc.requires_grad_(False)
        g_loss = -m.disc(xr).mean()
        d_w = adaptive_weight(rec_total, g_loss, m.last_layer) * cfg.disc_weight
        loss = loss + d_w * g_loss
    m.opt_g.zero_grad(set_to_none=True)
    acc.backward(loss)
    m.opt_g.step()

    # ---- discriminator step ----
    d_loss = torch.zeros((), device=acc.device)
    if use_gan:
        m.disc.requires_grad_(True)
        d_loss = hinge_d_loss(m.disc(x), m.disc(xr.detach()))
        m.opt_d.zero_grad(set_to_none=True)
        acc.backward(d_loss)
        m.opt_d.step()
    return {"loss_l1": rec.detach(), "loss_perceptual": perc.detach(), "loss_bp": bp.detach(), "kl": kl.detach(),
            "loss_g": g_loss.detach(), "d_weight": d_w, "loss_d": d_loss.detach()}


def write_samples(cfg: AutoencoderConfig, vae: AutoencoderKL, out: Path, log: LossLog, state: dict,
                  heldout: np.ndarray, heldout_p: np.ndarray | None) -> None:
    """Held-out PSNR (scenes, and photo crops when training on them) into the log; a grid of
    originals and reconstructions; the loss plot."""
    vae.eval()
    rec = reconstruct(vae, heldout)
    row = {"step": state["step"], "heldout_psnr": psnr(heldout, rec)}
    grid = [heldout[:16], rec[:16]]
    if heldout_p is not None:
        rec_p = reconstruct(vae, heldout_p)
        row["heldout_photo_psnr"] = psnr(heldout_p, rec_p)
        grid += [heldout_p[:16], rec_p[:16]]
    vae.train()
    save_grid(np.concatenate(grid), out / "samples.png", cols=16)
    log.add(row)
    log.plot(out / "loss.png")


def train(cfg: AutoencoderConfig) -> AutoencoderKL:
    acc, out = start(cfg)
    vae = AutoencoderKL.from_pretrained(cfg.init_from).float() if cfg.init_from else build_autoencoder(cfg)
    parts = _Parts(cfg, acc, vae)
    ckpt, log = resume(acc, out, cfg)
    heldout = heldout_images(64)
    heldout_p = heldout_crops(64) if cfg.photo_fraction > 0 else None

    def samples():
        if acc.is_main_process:
            write_samples(cfg, vae, out, log, ckpt.state, heldout, heldout_p)

    budget = Budget(cfg.steps, cfg.max_minutes, cfg.cpu_clock)
    step_loop(acc, cfg, ckpt, log, budget, partial(train_step, cfg, acc, parts), samples, log_last=True)
    model = vae.eval()
    if cfg.export and acc.is_main_process:
        export(model, cfg, steps=ckpt.state["step"])
    return model


def export(vae: AutoencoderKL, cfg: AutoencoderConfig, steps: int | None = None) -> Path:
    """Measure latent statistics, write the model (safetensors) and its held-out PSNR."""
    mean, std = latent_stats(vae, cfg.stats_scenes)
    vae.register_to_config(latents_mean=mean, latents_std=std, scaling_factor=1.0)
    dest = ensure_dir(cfg.export)
    model = vae.to(torch.float16) if cfg.export_fp16 else vae
    model.save_pretrained(dest, safe_serialization=True)
    test = heldout_images(cfg.heldout_scenes)
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
