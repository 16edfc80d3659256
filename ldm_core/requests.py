"""What every request shares, at the bottom of the request path (it imports only leaves).

`RequestError` (a message meant for the user), the sampling fields (`Sampling`), the field
checks against `Limits`, and safe image loading. Each task's request dataclass extends
`Sampling` in its task module (`ldm_core/tasks/<task>.py`); `ldm_core.validation` checks a
whole request.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from PIL import Image

from .catalog import ModelEntry
from .limits import DEFAULT_LIMITS, Limits
from .options import NO_SPEEDUPS, SAMPLER_NAMES, SPEEDUP_NAMES


class RequestError(ValueError):
    """A bad request; the message says what is wrong and is safe to show."""


@dataclass(kw_only=True)
class Sampling:
    steps: int | None = None             # None: the model's default
    guidance_scale: float | None = None
    seed: int = -1                       # -1: random
    num_images: int = 1
    width: int | None = None
    height: int | None = None
    sampler: str | None = None
    model: str | None = None             # catalog name; None: the task's default
    speedups: str | list[str] | None = None   # "deepcache,bf16" (or a list), "none"; None or "": the model's own


# the sampling fields as an API endpoint takes them, in the contract's order (docs/api.md)
SAMPLING_API = ("steps", "guidance_scale", "seed", "num_images", "width", "height", "sampler", "model")


# ------------------------------------------------------------------ checks
def whole(name: str, v, lo: int, hi: int) -> int:
    try:
        iv = int(v)
    except (TypeError, ValueError, OverflowError):
        raise RequestError(f"{name} must be a whole number, got {str(v)[:40]!r}") from None
    if iv != v and not (isinstance(v, float) and v.is_integer()) and not isinstance(v, str):
        raise RequestError(f"{name} must be a whole number, got {v!r}")
    if not lo <= iv <= hi:
        raise RequestError(f"{name} must be between {lo} and {hi}, got {iv}")
    return iv


def number(name: str, v, lo: float, hi: float) -> float:
    try:
        fv = float(v)
    except (TypeError, ValueError):
        raise RequestError(f"{name} must be a number, got {str(v)[:40]!r}") from None
    if not (lo <= fv <= hi):  # also rejects NaN
        raise RequestError(f"{name} must be between {lo} and {hi}, got {fv}")
    return fv


def text(name: str, v, limits: Limits) -> str:
    if v is None:
        return ""
    if not isinstance(v, str):
        raise RequestError(f"{name} must be text")
    if len(v) > limits.max_prompt_chars:
        raise RequestError(f"{name} is {len(v)} characters long; the limit is {limits.max_prompt_chars}")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RequestError(f"{name} is not valid Unicode text (a lone surrogate at character {e.start})") from None
    return v.replace("\x00", "").strip()


GREY_MODES = ("L", "I", "I;16", "I;16B", "I;16L")   # kept by `keep_grey`: a label map's class ids


def load_image(src, limits: Limits = DEFAULT_LIMITS, what: str = "image",
               max_pixels: int | None = None, keep_grey: bool = False) -> Image.Image:
    """Open an uploaded image safely: size and pixel limits checked from the header before
    decoding; any mode (palette, RGBA, CMYK, 16-bit, greyscale) converted to RGB, with
    transparency composited on white (`keep_grey`: greyscale kept as it is, for class ids)."""
    max_pixels = max_pixels or limits.max_input_pixels
    if src is None:
        raise RequestError(f"no {what} given")
    if isinstance(src, Image.Image):
        img = src
    else:
        if isinstance(src, dict) and "path" in src:  # gradio FileData dict
            src = src["path"]
        if isinstance(src, (bytes, bytearray)):
            data = bytes(src)
        elif isinstance(src, (str, os.PathLike)):
            try:
                size = os.path.getsize(src)
            except OSError:
                raise RequestError(f"{what} file could not be read") from None
            if size > limits.max_upload_bytes:
                raise RequestError(f"{what} file is {size / 1e6:.1f} MB; the limit is {_mb(limits.max_upload_bytes)}")
            with open(src, "rb") as f:
                data = f.read()
        else:
            raise RequestError(f"{what} must be an image file")
        if len(data) > limits.max_upload_bytes:
            raise RequestError(f"{what} is {len(data) / 1e6:.1f} MB; the limit is {_mb(limits.max_upload_bytes)}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):   # over PIL's global cap
            raise RequestError(f"{what} has too many pixels; the limit is {max_pixels}") from None
        except Exception:
            raise RequestError(f"{what} is not an image PIL can read (PNG, JPEG, WebP, ...)") from None
    w, h = img.size
    if w * h > max_pixels:
        raise RequestError(f"{what} is {w}x{h} = {w * h} pixels; the limit is {max_pixels}")
    if w < 1 or h < 1:
        raise RequestError(f"{what} is empty")
    try:
        img.load()              # a truncated file fails here (PIL's LOAD_TRUNCATED_IMAGES is left as it is: off)
    except Exception:
        raise RequestError(f"{what} is truncated or corrupt") from None
    return img if keep_grey and img.mode in GREY_MODES else to_rgb(img)


def _mb(n: int) -> str:
    return f"{n / 1e6:g} MB"


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        scale = 255.0 / 65535.0 if a.max() > 255 else 1.0
        img = Image.fromarray((a * scale).clip(0, 255).astype("uint8"), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")


# ------------------------------------------------------------------ shared fields
def check_sampling(req, entry: ModelEntry, limits: Limits) -> dict[str, Any]:
    """The shared sampling fields a request has, checked, with the model's defaults filled in."""
    have = {f.name for f in fields(req)}
    upd: dict[str, Any] = {"model": entry.name}
    upd["steps"] = whole("steps", entry.steps if req.steps is None else req.steps, limits.min_steps, limits.max_steps)
    upd["seed"] = whole("seed", -1 if req.seed is None else req.seed, -1, limits.max_seed)
    upd["num_images"] = whole("num_images", req.num_images, 1, limits.max_images)
    if "guidance_scale" in have:
        g = entry.guidance if req.guidance_scale is None else req.guidance_scale
        upd["guidance_scale"] = number("guidance_scale", g, 0.0, limits.max_guidance)
    sampler = req.sampler or entry.sampler
    if sampler not in SAMPLER_NAMES:
        raise RequestError(f"unknown sampler {str(sampler)[:40]!r}; choose one of {', '.join(SAMPLER_NAMES)}")
    upd["sampler"] = sampler
    if "speedups" in have:
        upd["speedups"] = check_speedups(entry.speedups if req.speedups in (None, "") else req.speedups)
    for name in ("prompt", "negative_prompt"):
        if name in have:
            upd[name] = text(name, getattr(req, name), limits)
    return upd


def check_speedups(v) -> str:
    """The speed-ups a request names (a comma list, a list, or "none"), as "bf16,deepcache" or "none"."""
    if isinstance(v, str):
        v = [] if v.strip().lower() == NO_SPEEDUPS else v.split(",")
    if not isinstance(v, (list, tuple)) or not all(isinstance(n, str) for n in v):
        raise RequestError(f"speedups must be a comma-separated list of {', '.join(SPEEDUP_NAMES)}, or "
                           f"{NO_SPEEDUPS!r}")
    names = {n.strip().lower() for n in v if n.strip()}
    unknown = sorted(names - set(SPEEDUP_NAMES))
    if unknown:
        raise RequestError(f"unknown speed-up {unknown[0][:40]!r}; choose from {', '.join(SPEEDUP_NAMES)}, or "
                           f"{NO_SPEEDUPS!r} for none")
    return ",".join(sorted(names)) or NO_SPEEDUPS


def check_size(req, entry: ModelEntry, limits: Limits, native: bool = True, multiple: int = 8) -> dict[str, int]:
    """width and height: the model's native size when unset (`native`; else None or 0 leaves them
    None: the input image's own size), within the limits and multiples of `multiple` (1: any size)."""
    out = {}
    for side in ("width", "height"):
        v = getattr(req, side)
        if not native and not v:
            out[side] = None
            continue
        v = whole(side, getattr(entry, side) if v is None else v, limits.min_side, limits.max_side)
        if v % multiple:
            raise RequestError(f"{side} must be a multiple of {multiple}, got {v}")
        out[side] = v
    return out


def own_size(req) -> tuple[int, int]:
    """The (width, height) a request on an input image asks for: its own, or the input's."""
    return req.width or req.image.width, req.height or req.image.height


def check_box(what: str, coords) -> tuple[float, float, float, float]:
    """A box's [x0, y0, x1, y1] as fractions of the image, checked ("box 2", "region 1" name it)."""
    if not isinstance(coords, (list, tuple)) or len(coords) != 4:
        raise RequestError(f"{what}: box must be four numbers [x0, y0, x1, y1]")
    try:
        x0, y0, x1, y1 = (float(c) for c in coords)
    except (TypeError, ValueError, OverflowError):
        raise RequestError(f"{what}: box must be four numbers [x0, y0, x1, y1]") from None
    if not all(0.0 <= c <= 1.0 for c in (x0, y0, x1, y1)):
        raise RequestError(f"{what}: coordinates must lie in [0, 1] (fractions of the image), got {coords}")
    if x1 <= x0 or y1 <= y0:
        raise RequestError(f"{what}: has zero or negative area (need x0 < x1 and y0 < y1), got {coords}")
    return x0, y0, x1, y1
