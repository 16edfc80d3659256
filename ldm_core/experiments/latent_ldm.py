"""The diffusion half of the f trade-off experiment (`f_tradeoff.py`): where diffusion runs for one f
(`Space`: an autoencoder's standardised latents, or the pixels), the text-conditioned model on it
(`Model`), its sampler, and its training (`Trainer`: one step at a time, resumable)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DPMSolverMultistepScheduler
from diffusers.training_utils import EMAModel

from ..data.images import from_uint8, to_uint8
from ..text import build_tokenizer
from ..train.diffusion import min_snr_weights, noise_scheduler
from ..train.loop import cosine_lr
from ..train.models import build_unet, new_text_encoder, tokenize


@dataclass
class Space:
    """Where diffusion runs for one f: the autoencoder (None = pixels) and per-channel statistics."""
    f: int
    vae: AutoencoderKL | None
    mean: torch.Tensor                 # (1, c, 1, 1)
    std: torch.Tensor

    @torch.no_grad()
    def encode(self, images: np.ndarray) -> torch.Tensor:
        x = from_uint8(images)  # (B, 3, 64, 64) in [-1, 1]
        z = x if self.vae is None else self.vae.encode(x).latent_dist.mode()  # (B, c, 64/f, 64/f)
        return (z - self.mean) / self.std

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> np.ndarray:
        z = z * self.std + self.mean
        return to_uint8(z if self.vae is None else self.vae.decode(z).sample)


@dataclass
class Model:
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    space: Space


@torch.no_grad()
def sample(m: Model, prompts: list[str], seeds: list[int], steps: int, guidance: float) -> np.ndarray:
    """DPM++ 2M with classifier-free guidance -> (B, 64, 64, 3) uint8. Each image's noise comes from its
    own seed; the batch runs as one, so images agree across batch sizes up to float rounding."""
    sched = DPMSolverMultistepScheduler.from_config(noise_scheduler().config)
    sched.set_timesteps(steps)
    n = len(prompts)
    c = m.unet.config.out_channels
    side = 64 // m.space.f
    ids = tokenize(m.tokenizer, prompts + [""] * n, m.tokenizer.model_max_length, "cpu")
    cond = m.text_encoder(ids)[0]  # (2B, L, D)
    x = torch.stack([torch.randn(c, side, side, generator=torch.Generator().manual_seed(s)) for s in seeds])
    for t in sched.timesteps:
        e_c, e_u = m.unet(torch.cat([x, x]), t, encoder_hidden_states=cond).sample.chunk(2)
        x = sched.step(e_u + guidance * (e_c - e_u), t, x).prev_sample
    return m.space.decode(x)


@dataclass
class Progress:
    """What a run has done so far: saved with its checkpoint so it resumes where it stopped."""
    step: int = 0
    cpu_seconds: float = 0.0           # training only (evaluation excluded)
    images: int = 0
    evals: list[dict] = field(default_factory=list)


class Trainer:
    """The LDM of one f: networks, EMA, optimizer, the latent cache; one step at a time."""

    def __init__(self, cfg, space: Space, latents: torch.Tensor, captions: list[str], run: Path):
        self.cfg = cfg
        self.latents = latents
        self.captions = captions
        self.path = run / "checkpoint.pt"
        self.tokenizer = build_tokenizer(cfg.max_length)
        c = latents.shape[1]
        torch.manual_seed(cfg.seed)
        unet = build_unet(cfg, c, c)
        self.model = Model(unet, new_text_encoder(cfg, self.tokenizer), self.tokenizer, space)
        self.params = [p for mod in (unet, self.model.text_encoder) for p in mod.parameters()]
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=0.01)
        self.ema = EMAModel(self.params, decay=0.999, use_ema_warmup=True, power=0.75)
        self.scheduler = noise_scheduler()
        self.progress = Progress()
        if self.path.exists():
            d = torch.load(self.path, weights_only=False)
            unet.load_state_dict(d["unet"])
            self.model.text_encoder.load_state_dict(d["text_encoder"])
            self.opt.load_state_dict(d["opt"])
            self.ema.load_state_dict(d["ema"])
            self.progress = Progress(**d["progress"])
        self.gen = torch.Generator().manual_seed(cfg.seed + 7919 * self.progress.step)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.unet.parameters())

    def save(self) -> None:
        torch.save({"unet": self.model.unet.state_dict(), "text_encoder": self.model.text_encoder.state_dict(),
                    "opt": self.opt.state_dict(), "ema": self.ema.state_dict(),
                    "progress": asdict(self.progress)}, self.path)

    def step(self) -> float:
        cfg = self.cfg
        p = self.progress
        lr = cosine_lr(cfg.lr, p.step, cfg.warmup, min(1.0, p.cpu_seconds / (60 * cfg.budget_minutes)))
        for g in self.opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, len(self.latents), (cfg.batch_size,), generator=self.gen)
        drop = torch.rand(cfg.batch_size, generator=self.gen) < cfg.caption_dropout
        texts = ["" if d else self.captions[i] for i, d in zip(idx.tolist(), drop.tolist())]
        x0 = self.latents[idx]  # (B, c, 64/f, 64/f)
        noise = torch.randn(x0.shape, generator=self.gen)
        t = torch.randint(0, 1000, (cfg.batch_size,), generator=self.gen)
        cond = self.model.text_encoder(tokenize(self.tokenizer, texts, cfg.max_length, "cpu"))[0]  # (B, L, D)
        pred = self.model.unet(self.scheduler.add_noise(x0, noise, t), t, encoder_hidden_states=cond).sample
        w = min_snr_weights(self.scheduler, t, 5.0)
        loss = (F.mse_loss(pred, noise, reduction="none").mean((1, 2, 3)) * w).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        self.ema.step(self.params)
        p.step += 1
        p.images += cfg.batch_size
        return loss.item()

    def ema_model(self) -> Model:
        """A copy of the model with the EMA weights, for sampling."""
        unet = build_unet(self.cfg, self.latents.shape[1], self.latents.shape[1])
        te = new_text_encoder(self.cfg, self.tokenizer)
        unet.load_state_dict(self.model.unet.state_dict())
        te.load_state_dict(self.model.text_encoder.state_dict())
        self.ema.copy_to([p for mod in (unet, te) for p in mod.parameters()])
        return Model(unet.eval(), te.eval(), self.tokenizer, self.model.space)
