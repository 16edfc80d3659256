"""One dataclass per task: what the UI, the API and the command line hand the stack.

`validate()` checks a request against `Limits` and the catalog before any image is
decoded or any model runs, fills unset sampling values from the model's catalog
defaults, and raises `RequestError` with a message meant for the user.
"""
from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

from .catalog import Catalog, CatalogError, ModelEntry
from .limits import DEFAULT_LIMITS, Limits
from .options import MASK_DOWNSAMPLING, SAMPLER_NAMES


DEFAULT_BACK_PROJECTION = 5               # super-resolution: iterations onto the input


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


@dataclass(kw_only=True)
class Text2ImgRequest(Sampling):
    task = "text2img"
    prompt: str
    negative_prompt: str = ""


@dataclass(frozen=True)
class Box:
    label: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in [0, 1]


@dataclass(kw_only=True)
class Layout2ImgRequest(Sampling):
    task = "layout2img"
    prompt: str = ""
    boxes: list[Box] | str = field(default_factory=list)  # a JSON string is parsed by validate()
    negative_prompt: str = ""


@dataclass(kw_only=True)
class SuperResRequest:
    task = "superres"
    image: Any                            # path, bytes or PIL image
    steps: int | None = None
    seed: int = -1
    model: str | None = None
    num_images: int = 1
    guidance_scale: float | None = None
    sampler: str | None = None
    back_projection: int | None = None    # iterations onto the input (0: off, as diffusers); None: 5
    average: int | None = None            # samples averaged per image (1: one, as diffusers); None: the model's


@dataclass(kw_only=True)
class InpaintRequest(Sampling):
    task = "inpaint"
    image: Any
    mask: Any                             # white = repaint, black = keep
    prompt: str = ""
    negative_prompt: str = ""
    keep_unmasked: bool = True            # pixels outside the mask exactly as given (False: as decoded, as diffusers)
    mask_downsampling: str = "max"        # to the latent grid: "max" (thin strokes kept) or "nearest" (diffusers)


Request = Text2ImgRequest | Layout2ImgRequest | SuperResRequest | InpaintRequest


# ------------------------------------------------------------------ checks
def _int(name: str, v, lo: int, hi: int) -> int:
    try:
        iv = int(v)
    except (TypeError, ValueError, OverflowError):
        raise RequestError(f"{name} must be a whole number, got {str(v)[:40]!r}") from None
    if iv != v and not (isinstance(v, float) and v.is_integer()) and not isinstance(v, str):
        raise RequestError(f"{name} must be a whole number, got {v!r}")
    if not lo <= iv <= hi:
        raise RequestError(f"{name} must be between {lo} and {hi}, got {iv}")
    return iv


def _float(name: str, v, lo: float, hi: float) -> float:
    try:
        fv = float(v)
    except (TypeError, ValueError):
        raise RequestError(f"{name} must be a number, got {str(v)[:40]!r}") from None
    if not (lo <= fv <= hi):  # also rejects NaN
        raise RequestError(f"{name} must be between {lo} and {hi}, got {fv}")
    return fv


def _text(name: str, v, limits: Limits) -> str:
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


def parse_boxes(raw, limits: Limits = DEFAULT_LIMITS) -> list[Box]:
    """Boxes from JSON text or a list of {"label": str, "box": [x0, y0, x1, y1]} (normalised)."""
    if isinstance(raw, str):
        if len(raw) > limits.max_boxes_json_chars:
            raise RequestError(f"boxes JSON is too long ({len(raw)} characters; limit {limits.max_boxes_json_chars})")
        try:
            raw = json.loads(raw) if raw.strip() else []
        except json.JSONDecodeError as e:
            raise RequestError(f"boxes is not valid JSON: {e.msg} at character {e.pos}") from None
        except RecursionError:
            raise RequestError("boxes JSON is nested too deeply: give a flat list of boxes") from None
        except ValueError:   # e.g. an integer of more digits than Python converts
            raise RequestError("boxes JSON holds a number too long to read") from None
    if not isinstance(raw, list):
        raise RequestError('boxes must be a JSON list like [{"label": "red circle", "box": [0.1, 0.1, 0.4, 0.4]}]')
    if len(raw) > limits.max_boxes:
        raise RequestError(f"{len(raw)} boxes given; at most {limits.max_boxes} are supported")
    boxes = []
    for i, b in enumerate(raw, 1):
        if isinstance(b, Box):
            label, coords = b.label, b.box
        elif isinstance(b, dict) and "label" in b and "box" in b:
            label, coords = b["label"], b["box"]
        else:
            raise RequestError(f'box {i} must be an object with "label" and "box" keys')
        if not isinstance(label, str) or not label.strip() or len(label) > 60:
            raise RequestError(f"box {i}: label must be non-empty text of at most 60 characters")
        if not isinstance(coords, (list, tuple)) or len(coords) != 4:
            raise RequestError(f"box {i}: box must be four numbers [x0, y0, x1, y1]")
        try:
            x0, y0, x1, y1 = (float(c) for c in coords)
        except (TypeError, ValueError, OverflowError):
            raise RequestError(f"box {i}: box must be four numbers [x0, y0, x1, y1]") from None
        if not all(0.0 <= c <= 1.0 for c in (x0, y0, x1, y1)):
            raise RequestError(f"box {i}: coordinates must lie in [0, 1] (normalised to the image), got {coords}")
        if x1 <= x0 or y1 <= y0:
            raise RequestError(f"box {i}: has zero or negative area (need x0 < x1 and y0 < y1), got {coords}")
        boxes.append(Box(label.strip(), (x0, y0, x1, y1)))
    return boxes


def load_image(src, limits: Limits = DEFAULT_LIMITS, what: str = "image",
               max_pixels: int | None = None) -> Image.Image:
    """Open an uploaded image safely: size and pixel limits checked from the header before
    decoding; any mode (palette, RGBA, CMYK, 16-bit, greyscale) converted to RGB, with
    transparency composited on white."""
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
    return to_rgb(img)


def _mb(n: int) -> str:
    return f"{n / 1e6:g} MB"


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        import numpy as np
        a = np.asarray(img, dtype=np.float64)
        scale = 255.0 / 65535.0 if a.max() > 255 else 1.0
        img = Image.fromarray((a * scale).clip(0, 255).astype("uint8"), "L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB")


def load_mask(src, size: tuple[int, int], limits: Limits = DEFAULT_LIMITS) -> Image.Image:
    """A binary mask ("L", 0 or 255) of `size`: white = repaint. A mask of another size is
    resized (nearest) to the image; an all-black mask is an error (nothing to repaint)."""
    import numpy as np
    m = load_image(src, limits, what="mask")
    if m.size != size:
        m = m.resize(size, Image.NEAREST)
    a = np.asarray(m.convert("L")) > 127
    if not a.any():
        raise RequestError("the mask is empty (all black): paint the region to repaint in white")
    return Image.fromarray((a * 255).astype("uint8"), "L")


# ------------------------------------------------------------------ validate
def validate(req: Request, catalog: Catalog, limits: Limits = DEFAULT_LIMITS) -> tuple[Request, ModelEntry]:
    """A checked copy of `req` with every default filled in, and its catalog entry."""
    if not isinstance(req.model, (str, type(None))) or (req.model and len(req.model) > 200):
        raise RequestError("model must be a catalog name")
    try:
        entry = catalog.get(req.model, req.task)
    except CatalogError as e:
        raise RequestError(str(e)) from None
    upd: dict[str, Any] = {"model": entry.name}
    upd["steps"] = _int("steps", entry.steps if req.steps is None else req.steps, limits.min_steps, limits.max_steps)
    upd["seed"] = _int("seed", -1 if req.seed is None else req.seed, -1, limits.max_seed)
    upd["num_images"] = _int("num_images", req.num_images, 1, limits.max_images)
    g = entry.guidance if req.guidance_scale is None else req.guidance_scale
    upd["guidance_scale"] = _float("guidance_scale", g, 0.0, limits.max_guidance)
    sampler = req.sampler or entry.sampler
    if sampler not in SAMPLER_NAMES:
        raise RequestError(f"unknown sampler {str(sampler)[:40]!r}; choose one of {', '.join(SAMPLER_NAMES)}")
    upd["sampler"] = sampler
    if isinstance(req, (Text2ImgRequest, Layout2ImgRequest)):
        for side, native in (("width", entry.width), ("height", entry.height)):
            v = _int(side, native if getattr(req, side) is None else getattr(req, side), limits.min_side,
                     limits.max_side)
            if v % 8:
                raise RequestError(f"{side} must be a multiple of 8, got {v}")
            upd[side] = v
    if isinstance(req, (Text2ImgRequest, Layout2ImgRequest, InpaintRequest)):
        upd["prompt"] = _text("prompt", req.prompt, limits)
        upd["negative_prompt"] = _text("negative_prompt", req.negative_prompt, limits)
    if isinstance(req, Text2ImgRequest) and not upd["prompt"]:
        raise RequestError("the prompt is empty: describe the image, e.g. 'a red circle left of a blue square'")
    if isinstance(req, Layout2ImgRequest):
        upd["boxes"] = parse_boxes(req.boxes, limits)
        if not upd["boxes"] and not upd["prompt"]:
            raise RequestError("give at least one box (or a caption)")
    if isinstance(req, SuperResRequest):
        upd["image"] = load_image(req.image, limits, max_pixels=limits.max_superres_input_pixels)
        bp = DEFAULT_BACK_PROJECTION if req.back_projection is None else req.back_projection
        upd["back_projection"] = _int("back_projection", bp, 0, limits.max_back_projection)
        upd["average"] = _int("average", entry.average if req.average is None else req.average, 1, limits.max_average)
    if isinstance(req, InpaintRequest):
        for side in ("width", "height"):       # optional: the image's own size; any size, padded to the model
            if getattr(req, side) is not None:
                upd[side] = _int(side, getattr(req, side), limits.min_side, limits.max_side)
        img = load_image(req.image, limits)
        upd["image"] = img
        upd["mask"] = load_mask(req.mask, img.size, limits)
        if not isinstance(req.keep_unmasked, bool):
            raise RequestError(f"keep_unmasked must be true or false, got {str(req.keep_unmasked)[:20]!r}")
        if req.mask_downsampling not in MASK_DOWNSAMPLING:
            raise RequestError(f"mask_downsampling must be one of {', '.join(MASK_DOWNSAMPLING)}, "
                               f"got {str(req.mask_downsampling)[:20]!r}")
    checked = replace(req, **upd)
    check_work(checked, limits)
    return checked, entry


def work(req: Request) -> tuple[float, str]:
    """The compute a checked request asks for: megapixel-steps (output pixels x steps x images x
    samples averaged), and how that product is made."""
    if isinstance(req, SuperResRequest):
        w, h, k = req.image.width * 4, req.image.height * 4, req.average
    elif isinstance(req, InpaintRequest):
        w, h, k = req.width or req.image.width, req.height or req.image.height, 1
    else:
        w, h, k = req.width, req.height, 1
    mp = w * h * req.steps * req.num_images * k / 1e6
    how = f"{w}x{h} pixels x {req.steps} steps x {req.num_images} image{'s' * (req.num_images > 1)}"
    return mp, how + (f" x {k} samples averaged" if k > 1 else "")


def check_work(req: Request, limits: Limits) -> None:
    if limits.max_work is None:
        return
    mp, how = work(req)
    if mp > limits.max_work:
        raise RequestError(f"this request asks for {mp:.1f} megapixel-steps ({how}); this server's compute "
                           f"budget is {limits.max_work:g} per request: use fewer steps or images, or a smaller "
                           f"size" + (" or fewer samples averaged" if isinstance(req, SuperResRequest) else ""))
