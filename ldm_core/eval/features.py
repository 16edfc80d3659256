"""FID on the features of a tiny CNN trained on Shapes World renders.

Inception features know nothing about this world, so FID here uses a small classifier
trained to say which of the 24 (colour, shape) combinations a scene contains
(multi-label BCE); its 128-d global-pooled penultimate activations are the features.

Train it (reproducible; writes models/eval-classifier/{model.safetensors,config.json}):

    python -m ldm_core.eval train-classifier --out models/eval-classifier --steps 4000 --seed 0 --threads 1

The written config.json records the run's held-out accuracy and training time (the committed
classifier's figures: docs/design-notes.md).
Seeds: training scenes 50_000_000 + ..., held-out scenes 60_000_000 + ... (both outside the
models' training range and the evaluation prompt set).
"""
from __future__ import annotations

import json
import time
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from scipy import linalg

from ..data.detector import degrade
from ..data.shapes import COLORS, SHAPES, render_batch

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DIR = REPO / "models" / "eval-classifier"
LABELS = [f"{c} {s}" for c in COLORS for s in SHAPES]  # 24 multi-label targets
TRAIN_SEED0 = 50_000_000
HELDOUT_SEED0 = 60_000_000
FEATURE_DIM = 128


class TinyCNN(nn.Module):
    """4 convs (32/64/128/128), global average pool -> 128-d feature -> 24 logits."""

    def __init__(self, width: int = 32, n_labels: int = len(LABELS)):
        super().__init__()
        w = width
        self.convs = nn.ModuleList([
            nn.Conv2d(3, w, 3, 2, 1),           # (B, 32, 32, 32)
            nn.Conv2d(w, 2 * w, 3, 2, 1),       # (B, 64, 16, 16)
            nn.Conv2d(2 * w, 4 * w, 3, 2, 1),   # (B, 128, 8, 8)
            nn.Conv2d(4 * w, 4 * w, 3, 1, 1),   # (B, 128, 8, 8)
        ])
        self.head = nn.Linear(4 * w, n_labels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 64, 64) in [-1, 1] -> (B, 128)."""
        for conv in self.convs:
            x = F.relu(conv(x))
        return x.mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, 24) logits


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, 64, 64, 3) uint8 -> (N, 3, 64, 64) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def targets(scenes) -> torch.Tensor:
    """(N, 24) presence of each colour-shape combination."""
    y = torch.zeros(len(scenes), len(LABELS))
    for i, sc in enumerate(scenes):
        for o in sc.objects:
            y[i, LABELS.index(o.label)] = 1.0
    return y


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Light degradation on half the batch: Gaussian blur (sigma 0.3-1.0) and noise (<= 8/255)."""
    half = x.shape[0] // 2
    sigma = 0.3 + 0.7 * torch.rand((), generator=g).item()
    r = torch.arange(-2, 3, dtype=torch.float32)
    k1 = torch.exp(-r ** 2 / (2 * sigma ** 2))
    k1 = k1 / k1.sum()
    k2 = (k1[:, None] * k1[None]).expand(3, 1, 5, 5)                 # (3, 1, 5, 5) depthwise
    blurred = F.conv2d(F.pad(x[:half], (2, 2, 2, 2), mode="replicate"), k2, groups=3)
    noise_std = (8 / 127.5) * torch.rand(half, 1, 1, 1, generator=g)
    noisy = blurred + noise_std * torch.randn(blurred.shape, generator=g)
    return torch.cat([noisy.clamp(-1, 1), x[half:]])


@torch.no_grad()
def multilabel_accuracy(model: TinyCNN, n: int = 2000, seed0: int = HELDOUT_SEED0, degraded: bool = False) -> dict:
    """Held-out exact-set accuracy (all 24 labels right) and per-label accuracy.

    degraded: blur sigma 0.7 px + noise 5/255 (detector.degrade) on every image first.
    """
    imgs, scenes = render_batch(range(seed0, seed0 + n))
    if degraded:
        imgs = np.stack([degrade(im, seed=i) for i, im in enumerate(imgs)])
    y = targets(scenes)
    pred = torch.cat([model(to_tensor(imgs[i:i + 256])) for i in range(0, n, 256)]) > 0
    return {"exact_set": (pred == y.bool()).all(1).float().mean().item(),
            "per_label": (pred == y.bool()).float().mean().item(), "scenes": n}


def train_classifier(out_dir: str | Path = DEFAULT_DIR, steps: int = 3000, seed: int = 0,
                     batch: int = 64, lr: float = 2e-3) -> dict:
    """Train TinyCNN on fresh renders (seeded), save fp16 safetensors + config; returns the config."""

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = TinyCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    t0 = time.monotonic()
    for step in range(steps):
        s0 = TRAIN_SEED0 + seed * 1_000_000 + step * batch  # fresh scenes every step, reproducible
        imgs, scenes = render_batch(range(s0, s0 + batch))
        x = augment(to_tensor(imgs), g)
        y = targets(scenes)
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 250 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}  {time.monotonic() - t0:6.0f}s", flush=True)
    minutes = (time.monotonic() - t0) / 60
    model.eval()
    clean = multilabel_accuracy(model)
    degraded = multilabel_accuracy(model, degraded=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    config = {"arch": "TinyCNN", "width": 32, "labels": LABELS, "feature_dim": FEATURE_DIM,
              "steps": steps, "batch": batch, "lr": lr, "seed": seed, "train_seed0": TRAIN_SEED0,
              "train_minutes": round(minutes, 2), "torch_threads": torch.get_num_threads(),
              "heldout": clean, "heldout_degraded": degraded, "dtype": "float16"}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    load_classifier.cache_clear()
    return config


@lru_cache(maxsize=4)
def load_classifier(path: str | Path = DEFAULT_DIR) -> TinyCNN:

    path = Path(path)
    weights = path / "model.safetensors"
    if not weights.exists():
        raise FileNotFoundError(f"no eval classifier at {weights}; train it with "
                                "`python -m ldm_core.eval train-classifier`")
    cfg = json.loads((path / "config.json").read_text())
    model = TinyCNN(width=cfg.get("width", 32))
    model.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()})
    return model.eval()


@torch.no_grad()
def features(images: np.ndarray, path: str | Path = DEFAULT_DIR, batch: int = 256) -> np.ndarray:
    """(N, 64, 64, 3) uint8 -> (N, 128) float64 classifier features."""
    model = load_classifier(path)
    images = np.asarray(images)
    out = [model.features(to_tensor(images[i:i + batch])).double().numpy() for i in range(0, len(images), batch)]
    return np.concatenate(out) if out else np.zeros((0, FEATURE_DIM))


def fid(feats_a: np.ndarray, feats_b: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) feature sets."""
    mu_a = feats_a.mean(0)
    mu_b = feats_b.mean(0)
    cov_a = np.cov(feats_a, rowvar=False)
    cov_b = np.cov(feats_b, rowvar=False)
    with warnings.catch_warnings():  # singular products are expected for few samples; handled below
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(cov_a @ cov_b)
        if not np.isfinite(covmean).all():  # nudge the diagonals (as pytorch-fid does)
            off = eps * np.eye(len(mu_a))
            covmean = linalg.sqrtm((cov_a + off) @ (cov_b + off))
    covmean = np.real(covmean)  # imaginary parts are numerical noise
    d = mu_a - mu_b
    return float(max(d @ d + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean), 0.0))


def fid_images(images_a: np.ndarray, images_b: np.ndarray, path: str | Path = DEFAULT_DIR) -> float:
    return fid(features(images_a, path), features(images_b, path))
