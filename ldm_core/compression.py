"""Perceptual compression on the user's own picture (Rombach et al. 2022, §3.1 and §4.1): every
first-stage autoencoder there is, one image encoded and decoded by each, and what survived.

Where autoencoders come from (`autoencoders`):
- built-in: folders of the catalog's root (models/) whose model_index.json names an AutoencoderKL
  or a VQModel (shapes-autoencoder, shapes-photo-autoencoder);
- the f trade-off experiment (docs/f-tradeoff.md), where it has run: `<dir>/f<f>/autoencoder/`, and
  f = 1 (diffusion on standardised pixels) as the identity; <dir> is $LDM_F_TRADEOFF_DIR, else
  runs/f-tradeoff beside the package (the experiment's default --out);
- the paper's zoo (`ldm_core.zoo`) once converted: each first stage (`<zoo>/<name>/vae/`) and the
  first stage of each converted LDM; unconverted first stages are listed with how to get them.

`round_trip` pads the image (edge pixels repeated) to the autoencoder's multiple, encodes (a KL
posterior's mode; a VQ model's latents before quantisation, quantised by its decoder), decodes and
crops back; `run` adds PSNR, SSIM and the time of encode + decode. Loaded autoencoders stay in an
LRU cache bounded in bytes (`Loaded`); `Service.compress` runs each on the stack's device thread.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, VQModel
from PIL import Image

from . import zoo
from .device import module_bytes, native_small_convs
from .limits import DEFAULT_LIMITS, Limits, TimeLimit, check_deadline
from .loading import ModelLoadError, load_component
from .pipelines.latents import decode_latents, encode_latents, pad_edges, pad_multiple, pil_to_tensor, to_pil
from .requests import RequestError, load_image

log = logging.getLogger("ldm_core.compression")

ROOT = Path(__file__).resolve().parent.parent
F_TRADEOFF_DEFAULT = "runs/f-tradeoff"     # FTradeoffConfig.out (tests check they agree)
MAX_PIXELS = 512 * 512          # an input image at most (the zoo's KL-f8: 84 M parameters; cost grows with pixels)
MIN_SIDE = 16                   # an input image at least (SSIM's 7x7 window, the pads)
MAX_CACHED_BYTES = 1 << 30      # loaded autoencoders' weights kept at most (the one just used is always kept)
CLASSES = {"AutoencoderKL": AutoencoderKL, "VQModel": VQModel}


@dataclass(frozen=True)
class Autoencoder:
    """One first stage this machine has, or could have."""
    name: str                 # what a request names: "shapes-autoencoder", "f-tradeoff-f8", "zoo:kl-f8"
    source: str               # "built-in", "f trade-off", "zoo"
    kind: str                 # "KL", "VQ (Z = 8192)", "pixels" (the identity, f = 1)
    f: int | None             # downsampling factor (None: unknown until downloaded)
    channels: int | None      # latent channels
    path: Path | None = None  # the folder `from_pretrained` reads (None: the identity, or not here)
    subfolder: str | None = None
    cls: str = ""             # "AutoencoderKL" or "VQModel"; "" for the identity
    ready: bool = True
    how: str = ""             # how to get it, when not `ready`
    note: str = ""            # what is known of it (its held-out PSNR, the paper's)

    @property
    def label(self) -> str:
        shape = f"f={self.f}" + (f", c={self.channels}" if self.channels else "") if self.f else ""
        return f"{self.name} ({self.source}: {self.kind}{', ' + shape if shape else ''})"

    @property
    def default(self) -> bool:
        """Pre-checked in the tab: the built-ins (cheap, always there)."""
        return self.source == "built-in"


@dataclass
class RoundTrip:
    """One image through one autoencoder."""
    autoencoder: Autoencoder
    image: Image.Image | None = None               # the reconstruction, the input's size
    latent_shape: tuple[int, int, int] | None = None   # (C, h, w) of the padded input
    ratio: float | None = None                     # pixel values / latent values
    psnr: float | None = None                      # dB against the input (inf: identical)
    ssim: float | None = None
    seconds: float | None = None                   # encode + decode
    load_seconds: float | None = None              # loading it first, when this run did
    error: str = ""                                # why it did not run (the user may see it)


# ------------------------------------------------------------------ metrics
def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (inf when identical); as `ldm_core.eval.restore.psnr`."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean SSIM of two uint8 RGB images (scikit-image's, 7x7 window): as `ldm_core.eval.restore.ssim`."""
    from skimage.metrics import structural_similarity  # lazy: scikit-image is slow to import, only needed here
    return float(structural_similarity(a, b, channel_axis=2, data_range=255))


# ------------------------------------------------------------------ what there is
def f_tradeoff_dir() -> Path:
    """Where the f trade-off experiment wrote its runs: $LDM_F_TRADEOFF_DIR, else runs/f-tradeoff."""
    d = Path(os.environ.get("LDM_F_TRADEOFF_DIR") or F_TRADEOFF_DEFAULT)
    return d if d.is_absolute() else ROOT / d


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = None
    return data if isinstance(data, dict) else {}


def _describe(folder: Path) -> tuple[str, str, int, int] | None:
    """(class, kind, f, channels) of a diffusers autoencoder folder, from its config; None if it is not one."""
    cfg = _read_json(folder / "config.json")
    cls = cfg.get("_class_name")
    if cls not in CLASSES or not isinstance(cfg.get("block_out_channels"), list):
        return None
    f, c = 2 ** (len(cfg["block_out_channels"]) - 1), cfg.get("latent_channels")
    if cls == "VQModel":
        return cls, f"VQ (Z = {cfg.get('num_vq_embeddings', 256)})", f, cfg.get("vq_embed_dim") or c
    return cls, "KL", f, c


def _heldout(folder: Path) -> str:
    ev = _read_json(folder / "eval.json")
    psnr_db = ev.get("heldout_psnr_db")
    return f"trained here; held-out PSNR {psnr_db:.1f} dB on scenes" if isinstance(psnr_db, (int, float)) else ""


def _builtins(models_root: Path) -> list[Autoencoder]:
    out = []
    for folder in sorted(p for p in models_root.iterdir() if p.is_dir()) if models_root.is_dir() else []:
        if _read_json(folder / "model_index.json").get("_class_name") not in CLASSES:
            continue
        d = _describe(folder)
        if d:
            out.append(Autoencoder(folder.name, "built-in", d[1], d[2], d[3], folder, None, d[0],
                                   note=_heldout(folder)))
    return out


def _f_tradeoff(root: Path) -> list[Autoencoder]:
    if not root.is_dir():
        return []
    out = []
    factors = sorted(int(m.group(1)) for p in root.iterdir() if (m := re.fullmatch(r"f(\d+)", p.name)) and p.is_dir())
    for f in factors:
        if f == 1:
            out.append(Autoencoder("f-tradeoff-f1", "f trade-off", "pixels", 1, 3,
                                   note="diffusion on the standardised pixels: the identity, the baseline"))
            continue
        folder = root / f"f{f}" / "autoencoder"
        d = _describe(folder)
        if d:
            out.append(Autoencoder(f"f-tradeoff-f{f}", "f trade-off", d[1], d[2], d[3], folder, None, d[0],
                                   note=_heldout(folder)))
    return out


def _converted_vae(name: str) -> tuple[Path, str | None, tuple] | None:
    """A converted zoo model's first stage: (folder, subfolder, description)."""
    folder = zoo.converted(name)
    if folder is None:
        return None
    for path, sub in ((folder, "vae"), (folder, None)):
        d = _describe(path / sub if sub else path)
        if d:
            return path, sub, d
    return None


def _zoo() -> list[Autoencoder]:
    out = []
    for m in zoo.ZOO.values():
        found, note = _converted_vae(m.name), f"published: {m.note}"
        if found:
            path, sub, d = found
            what = "" if m.kind == "first_stage" else f"the first stage of the LDM {m.name}; "
            out.append(Autoencoder(f"zoo:{m.name}", "zoo", d[1], d[2], d[3], path, sub, d[0], note=what + note))
        elif m.kind == "first_stage":
            kind, _, f = m.name.partition("-f")
            out.append(Autoencoder(f"zoo:{m.name}", "zoo", kind.upper(), int(re.match(r"\d+", f).group()), None,
                                   ready=False, how=f"python -m ldm_core download {m.name}", note=note))
    for name in zoo.user_converted():
        found = _converted_vae(name)
        if found:
            path, sub, d = found
            out.append(Autoencoder(f"zoo:{name}", "zoo", d[1], d[2], d[3], path, sub, d[0],
                                   note="converted here from your own checkpoint"))
    return out


def autoencoders(models_root: Path, f_tradeoff: Path | None = None) -> list[Autoencoder]:
    """Every autoencoder there is: built-ins (folders of `models_root`), the f trade-off's (under
    `f_tradeoff`, default `f_tradeoff_dir()`), the zoo's (converted ones ready, the others not)."""
    return (_builtins(Path(models_root)) + _f_tradeoff(f_tradeoff or f_tradeoff_dir()) + _zoo())


def pick(listed: list[Autoencoder], names) -> list[Autoencoder]:
    """The autoencoders `names` asks for, in the listed order; RequestError for none, an unknown
    one, or one not on this machine (with how to get it)."""
    names = [names] if isinstance(names, str) else list(names or [])
    if not names:
        raise RequestError("pick at least one autoencoder")
    by_name = {a.name: a for a in listed}
    unknown = [str(n)[:60] for n in names if n not in by_name]
    if unknown:
        raise RequestError(f"unknown autoencoder {unknown[0]!r}; choose from {', '.join(by_name)}")
    missing = [by_name[n] for n in names if not by_name[n].ready]
    if missing:
        raise RequestError("not on this machine: " + "; ".join(f"{a.name} (get it with `{a.how}`)" for a in missing))
    return [a for a in listed if a.name in names]


def check_image(src, limits: Limits = DEFAULT_LIMITS) -> Image.Image:
    """The uploaded image (any of `load_image`'s sources), RGB, at most MAX_PIXELS pixels and at
    least MIN_SIDE a side; RequestError otherwise."""
    image = load_image(src, limits, what="image", max_pixels=min(limits.max_input_pixels, MAX_PIXELS))
    if min(image.size) < MIN_SIDE:
        raise RequestError(f"image is {image.width}x{image.height}; each side must be at least {MIN_SIDE} pixels")
    return image


# ------------------------------------------------------------------ loading, kept
class Loaded:
    """Autoencoders loaded once and kept, least recently used dropped first past `max_bytes` of
    weights (the one just asked for is always kept). Used from one thread (the device thread)."""

    def __init__(self, device, dtype: torch.dtype, max_bytes: int = MAX_CACHED_BYTES):
        self.device, self.dtype, self.max_bytes = torch.device(device), dtype, max_bytes
        self._cache: OrderedDict[tuple, torch.nn.Module] = OrderedDict()

    def __len__(self) -> int:
        return len(self._cache)

    def get(self, ae: Autoencoder) -> tuple[torch.nn.Module, float | None]:
        """The loaded module, and the seconds loading it took (None when it was kept from before)."""
        key = (str(ae.path), ae.subfolder, ae.cls)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key], None
        t0 = time.perf_counter()
        module = load_component(CLASSES[ae.cls], ae.path, ae.subfolder, self.dtype)
        module = module.to(self.device).eval().requires_grad_(False)
        if self.device.type == "cpu":
            native_small_convs(module)     # the stack's CPU default (docs/benchmarks.md)
        module.auto_memory = True          # whole image, or tiles when memory is short (pipelines/latents.py)
        self._cache[key] = module
        while len(self._cache) > 1 and sum(map(module_bytes, self._cache.values())) > self.max_bytes:
            dropped, _ = self._cache.popitem(last=False)
            log.info("autoencoder cache: dropped %s", dropped[0])
        return module, time.perf_counter() - t0


# ------------------------------------------------------------------ the round trip
@torch.inference_mode()
def round_trip(vae, image: Image.Image) -> tuple[Image.Image, tuple[int, int, int], float]:
    """`image` encoded and decoded by `vae` (None: the identity): (reconstruction at the input's
    size, the latent's (C, h, w), seconds of encode + decode)."""
    w, h = image.size
    if vae is None:
        t0 = time.perf_counter()
        out = to_pil(pil_to_tensor(image))[0]
        return out, (3, h, w), time.perf_counter() - t0
    param = next(vae.parameters())
    x = pil_to_tensor(pad_edges(image, pad_multiple(vae))).to(param.device, param.dtype)
    t0 = time.perf_counter()
    z = encode_latents(vae, x)
    check_deadline("encoding")
    out = to_pil(decode_latents(vae, z))[0]
    seconds = time.perf_counter() - t0
    return out.crop((0, 0, w, h)), tuple(z.shape[1:]), seconds


def run(loaded: Loaded, ae: Autoencoder, image: Image.Image) -> RoundTrip:
    """One round trip, measured; a failure to load or to fit in time or memory is the row's error
    (the other autoencoders still run)."""
    trip = RoundTrip(ae)
    try:
        vae, trip.load_seconds = (None, None) if ae.kind == "pixels" else loaded.get(ae)
        out, shape, trip.seconds = round_trip(vae, image)
    except (ModelLoadError, TimeLimit, RequestError) as e:
        trip.error = str(e)
        return trip
    except (torch.OutOfMemoryError, MemoryError):
        trip.error = "out of memory: try a smaller image"
        return trip
    a, b = np.asarray(image), np.asarray(out)
    trip.image, trip.latent_shape = out, shape
    trip.ratio = 3 * ae.f ** 2 / shape[0]      # values of the padded input per latent value
    trip.psnr, trip.ssim = psnr(a, b), ssim(a, b)
    return trip
