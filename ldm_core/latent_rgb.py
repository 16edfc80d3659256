"""Approximate previews ("Approx cheap"): a linear map from an autoencoder's latents to RGB.

Each latent cell roughly codes the mean colour of the f x f pixels above it, so an affine map
`rgb = latents . W + b` (W: C x 3) gives a thumbnail at the latent grid for one small matrix
product (milliseconds at 64x64) where a decode would cost a noticeable share of a generation.
It is fitted once per autoencoder by least squares from the latents as the pipelines hold them
(`encode_latents`: after the scaling factor and latent statistics; a VQ model's before
quantisation) to the RGB image area-averaged to the latent grid, over a few small seeded
images: Shapes World scenes and generic colour (gradients, random patches).

Stored as `latent_rgb.json` beside the autoencoder's config.json (the built-in models, committed;
`python -m ldm_core.latent_rgb [models/<name> ...]` refits them), or, for models whose folder is
not the project's (hub snapshots, the zoo), as `cache_dir()/<fingerprint>.json`, fitted on first
use (about 2.3 s for Stable Diffusion's autoencoder on 2 CPU cores). Each file carries the
fingerprint of the config and weights it was fitted for; one that does not match is ignored.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, VQModel
from PIL import Image, ImageDraw

from .catalog import MODELS_DIR
from .data.shapes import CANVAS, render_batch
from .pipelines.latents import encode_latents, latent_channels, vae_scale_factor

FILE, FORMAT = "latent_rgb.json", 1
FIT_IMAGES = 8             # a half Shapes World mosaics, a quarter gradients, a quarter colour patches
FIT_LATENT_SIDE = 16       # fitting images are 16 latent cells a side ...
MAX_FIT_SIDE = 128         # ... and at most 128 pixels (Stable Diffusion's f = 8: 128)
SAMPLED_PER_TENSOR = 64    # weights per tensor the fingerprint reads
VAE_CLASSES = {"AutoencoderKL": AutoencoderKL, "VQModel": VQModel}
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LatentRGB:
    """rgb (0..255) = latents . weight + bias, per latent cell."""
    weight: tuple[tuple[float, float, float], ...]   # one (r, g, b) row per latent channel
    bias: tuple[float, float, float]
    fingerprint: str                                 # of the autoencoder it was fitted for
    fitted_on: str = ""
    error: float = 0.0                               # mean absolute error on the fitting images, of 255

    @property
    def channels(self) -> int:
        return len(self.weight)

    def rgb(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, h, w) -> (B, h, w, 3) uint8 on the CPU."""
        lat = latents.detach().float().cpu()
        w = torch.tensor(self.weight, dtype=torch.float32)
        b = torch.tensor(self.bias, dtype=torch.float32)
        return (torch.einsum("bchw,ck->bhwk", lat, w) + b).clamp(0, 255).round().to(torch.uint8)

    def images(self, latents: torch.Tensor) -> list[Image.Image]:
        return [Image.fromarray(a) for a in self.rgb(latents).numpy()]

    def to_json(self, vae_class: str = "") -> str:
        return json.dumps({"format": FORMAT, "vae_class": vae_class, "latent_channels": self.channels,
                           "fingerprint": self.fingerprint, "fitted_on": self.fitted_on,
                           "mean_abs_error": self.error,
                           "maps": "latents as the pipelines hold them (encode_latents) -> RGB 0..255, "
                                   "area-averaged to the latent grid: rgb = latents . weight + bias",
                           "weight": [list(row) for row in self.weight], "bias": list(self.bias)},
                          indent=1) + "\n"


def read(path: Path) -> LatentRGB | None:
    """The map in `path`; None when there is none or it is unreadable."""
    try:
        d = json.loads(Path(path).read_text())
        if d.get("format") != FORMAT:
            return None
        weight = tuple(tuple(float(v) for v in row) for row in d["weight"])
        if len(weight) != d["latent_channels"] or any(len(row) != 3 for row in weight) or len(d["bias"]) != 3:
            return None
        return LatentRGB(weight, tuple(float(v) for v in d["bias"]), d["fingerprint"], d.get("fitted_on", ""),
                         float(d.get("mean_abs_error", 0.0)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def fingerprint(vae) -> str:
    """A hash of the autoencoder's class, config and weights (their names, shapes and an evenly
    spaced sample of each tensor, in float16 so an fp16 copy of the same weights matches)."""
    h = hashlib.sha256(type(vae).__name__.encode())
    config = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, t in vae.state_dict().items():
        flat = t.detach().reshape(-1)
        sample = flat[::max(1, flat.numel() // SAMPLED_PER_TENSOR)][:SAMPLED_PER_TENSOR]
        h.update(f"{name}{tuple(t.shape)}".encode())
        h.update(sample.to("cpu", torch.float16).numpy().tobytes())
    return h.hexdigest()[:32]


# ---------------------------------------------------------------- fitting
def _mosaic(seeds: list[int], k: int) -> np.ndarray:
    """k x k Shapes World scenes side by side: (k*64, k*64, 3) uint8."""
    scenes, _ = render_batch(seeds)
    rows = [np.concatenate(list(scenes[r * k:(r + 1) * k]), axis=1) for r in range(k)]
    return np.concatenate(rows, axis=0)


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    """Four random corner colours blended bilinearly."""
    corners = rng.uniform(0, 255, (2, 2, 3))
    t = np.linspace(0, 1, size)[:, None, None]
    top = corners[0, 0] * (1 - t) + corners[0, 1] * t       # (size, 1, 3) along x
    bottom = corners[1, 0] * (1 - t) + corners[1, 1] * t
    img = top.transpose(1, 0, 2) * (1 - t) + bottom.transpose(1, 0, 2) * t
    return img.round().astype(np.uint8)


def _patches(rng: np.random.Generator, size: int) -> np.ndarray:
    """Random colour rectangles and ellipses on a random background."""
    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(6, 12))):
        x0, y0 = (int(v) for v in rng.integers(0, size - 8, 2))
        x1, y1 = x0 + int(rng.integers(8, size // 2)), y0 + int(rng.integers(8, size // 2))
        shape = draw.rectangle if rng.random() < 0.5 else draw.ellipse
        shape([x0, y0, x1, y1], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return np.asarray(img)


def fitting_images(size: int, n: int = FIT_IMAGES, seed: int = 0) -> torch.Tensor:
    """n seeded images (n, 3, size, size) in [-1, 1]: Shapes World mosaics at the world's own
    scale (64 pixels a scene), bilinear gradients and random colour patches."""
    rng = np.random.default_rng(seed)
    k = max(1, size // CANVAS)
    out = []
    for i in range(n):
        if i % 4 < 2:
            seeds = [seed * 10_000 + i * k * k + j for j in range(k * k)]
            img = Image.fromarray(_mosaic(seeds, k)).resize((size, size), Image.BILINEAR)
            out.append(np.asarray(img))
        else:
            out.append(_gradient(rng, size) if i % 4 == 2 else _patches(rng, size))
    x = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def _describe(size: int, n: int, seed: int) -> str:
    kinds = [i % 4 for i in range(n)]     # 0, 1: shapes, 2: a gradient, 3: patches (fitting_images)
    return (f"{n} images of {size}x{size} (seed {seed}): {sum(k < 2 for k in kinds)} Shapes World mosaics, "
            f"{kinds.count(2)} gradients, {kinds.count(3)} colour-patch images")


@torch.inference_mode()
def fit(vae, n: int = FIT_IMAGES, seed: int = 0) -> LatentRGB:
    """Fit the map for `vae` by least squares; ValueError where it cannot be fitted."""
    if not isinstance(vae, tuple(VAE_CLASSES.values())) or vae.config.out_channels != 3:
        raise ValueError(f"no latent->RGB map for a {type(vae).__name__} with "
                         f"{getattr(vae.config, 'out_channels', '?')} output channels")
    f = vae_scale_factor(vae)
    size = max(f, min(MAX_FIT_SIDE, FIT_LATENT_SIDE * f) // f * f)
    images = fitting_images(size, n, seed)
    p = next(vae.parameters())
    lat = encode_latents(vae, images.to(p.device, p.dtype)).float().cpu()
    target = F.avg_pool2d((images + 1) * 127.5, f)
    if lat.shape[-1] > 4:   # the border cells see the encoder's padding: fit the inside
        lat, target = lat[..., 1:-1, 1:-1], target[..., 1:-1, 1:-1]
    c = latent_channels(vae)
    if lat.shape[1] != c:
        raise ValueError(f"{type(vae).__name__} encoded {lat.shape[1]} channels, not its {c}")
    x = lat.permute(0, 2, 3, 1).reshape(-1, c).double().numpy()
    y = target.permute(0, 2, 3, 1).reshape(-1, 3).double().numpy()
    x1 = np.concatenate([x, np.ones((len(x), 1))], 1)
    if not np.isfinite(x1).all():
        raise ValueError(f"{type(vae).__name__} encoded the fitting images to non-finite latents")
    coef = np.linalg.lstsq(x1, y, rcond=None)[0]                  # (C + 1, 3)
    error = float(np.abs(np.clip(x1 @ coef, 0, 255) - y).mean())
    coef = np.round(coef, 6)                                      # as stored: a read map equals the fitted one
    return LatentRGB(tuple(tuple(float(v) for v in row) for row in coef[:c]), tuple(float(v) for v in coef[c]),
                     fingerprint(vae), _describe(size, n, seed), round(error, 2))


# ---------------------------------------------------------------- where maps live
def cache_dir() -> Path:
    """Maps of models whose folder is not the project's: $LDM_LATENT_RGB_DIR, else beside the zoo's."""
    return Path(os.environ.get("LDM_LATENT_RGB_DIR") or Path.home() / ".cache" / "ldm-studio" / "latent-rgb")


def _candidates(vae, fp: str) -> list[Path]:
    """Beside the config the autoencoder was loaded from (its folder, or the pipeline folder's
    vae/ or vqvae/), then the user cache."""
    where = dict(vae.config).get("_name_or_path") or ""
    folder = Path(where) if where else None
    paths = [folder / sub / FILE for sub in ("", "vae", "vqvae")] if folder and folder.is_dir() else []
    return paths + [cache_dir() / f"{fp}.json"]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    (tmp := path.with_name(f".{path.name}.{os.getpid()}.tmp")).write_text(text)
    os.replace(tmp, path)   # whole or not at all


def find(vae) -> LatentRGB | None:
    """The stored map whose fingerprint matches `vae`, or None."""
    fp = fingerprint(vae)
    for path in _candidates(vae, fp):
        m = read(path)
        if m is not None and m.fingerprint == fp:
            return m
        if m is not None:
            log.info("%s was fitted for other autoencoder weights: ignored", path)
    return None


def fit_and_cache(vae) -> LatentRGB | None:
    """Fit the map for `vae` and keep it in the user cache; None where it cannot be fitted."""
    t0 = time.perf_counter()
    try:
        m = fit(vae)
    except (ValueError, RuntimeError, np.linalg.LinAlgError) as e:
        log.warning("latent previews of %s stay false-colour: %s", type(vae).__name__, e)
        return None
    log.info("fitted the latent->RGB preview map of a %s in %.2f s", type(vae).__name__, time.perf_counter() - t0)
    try:
        _write(cache_dir() / f"{m.fingerprint}.json", m.to_json(type(vae).__name__))
    except OSError as e:   # a read-only home: the map still serves this process
        log.warning("could not cache the latent->RGB map: %s", e)
    return m


_maps: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()   # vae -> LatentRGB | None
_lock = threading.Lock()


def for_vae(vae) -> LatentRGB | None:
    """The map of `vae`: stored, else fitted once (then cached on disk); None where it cannot be
    fitted. Remembered per autoencoder object, so later calls cost a dictionary lookup."""
    with _lock:
        if vae not in _maps:
            _maps[vae] = find(vae) or fit_and_cache(vae)
        return _maps[vae]


# ---------------------------------------------------------------- the built-in models' files
def vae_folder(folder: Path) -> Path | None:
    """The folder of the autoencoder a models/ folder uses: itself (an autoencoder), the shared one
    its model_index.json names (`_shared`), or its vae/; None when it has none."""
    folder = Path(folder)
    index = json.loads((folder / "model_index.json").read_text()) if (folder / "model_index.json").exists() else {}
    if index.get("_class_name") in VAE_CLASSES:
        return folder
    shared = index.get("_shared", {}).get("vae")
    if shared:
        return (folder.parent / shared).resolve()
    for sub in ("vae", "vqvae"):
        if (folder / sub / "config.json").exists():
            return folder / sub
    return None


def refit(folder: Path) -> tuple[Path, LatentRGB]:
    """Fit the map of the autoencoder in `folder` and write it beside its config.json."""
    cls = VAE_CLASSES[json.loads((Path(folder) / "config.json").read_text())["_class_name"]]
    m = fit(cls.from_pretrained(folder).eval())
    _write(Path(folder) / FILE, m.to_json(cls.__name__))
    return Path(folder) / FILE, m


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m ldm_core.latent_rgb",
                                description="(Re)fit the latent->RGB preview maps of the models' autoencoders.")
    p.add_argument("folders", nargs="*", type=Path, help="models/<name> folders (default: every one)")
    args = p.parse_args(argv)
    folders = args.folders or sorted(d for d in MODELS_DIR.iterdir() if d.is_dir())
    done = set()
    for folder in folders:
        target = vae_folder(folder)
        if target is None or target.resolve() in done:
            print(f"{folder}: {'no autoencoder' if target is None else 'shares ' + str(target)}")
            continue
        done.add(target.resolve())
        t0 = time.perf_counter()
        path, m = refit(target)
        print(f"{path}: mean abs error {m.error:.1f}/255, fitted in {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
