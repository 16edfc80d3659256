"""Provenance of every image: generation parameters and an "AI-generated" label in PNG
text chunks, so a saved image can be reproduced and is marked as machine-made, and an
invisible watermark in the pixels (`ldm_core.watermark`) that survives the metadata being
stripped (a copy, a re-save, a JPEG, a crop; its measured limits: docs/security.md).

Chunks written:
- `parameters`: the A1111-style one-line summary (prompt, negative prompt, steps, ...),
  which other tools already read;
- `ldm_studio`: the exact parameters as JSON (what `read_parameters` returns);
- `AI-generated`: "true", and `Software`: "Latent Diffusion Studio".

`read_watermark(image)` reads the pixel mark back (`python -m ldm_core watermark FILE`).
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from PIL import Image, PngImagePlugin

from . import watermark as _wm

SOFTWARE = "Latent Diffusion Studio"


def a1111_text(params: dict) -> str:
    lines = [params["prompt"]] if params.get("prompt") else []     # no blank first line without a prompt
    if params.get("negative_prompt"):
        lines.append(f"Negative prompt: {params['negative_prompt']}")
    keys = [("steps", "Steps"), ("sampler", "Sampler"), ("guidance_scale", "CFG scale"), ("seed", "Seed"),
            ("size", "Size"), ("model", "Model"), ("task", "Task")]
    keys.append(("speedups", "Speed-ups"))     # as A1111 writes its "Token merging ratio": when one ran
    parts = [f"{label}: {params[k]}" for k, label in keys if params.get(k) not in (None, "", "none")]
    lines.append(", ".join(parts))
    plot = params.get("xyplot")
    if isinstance(plot, dict):        # a grid: these are its first cell's; say what varies across it
        axes = [f"{plot.get(a + '_axis')} = {', '.join(map(str, plot.get(a + '_values') or []))}"
                for a in ("x", "y") if plot.get(a + "_axis")]
        lines.append(f"X/Y plot of {' against '.join(axes)} (the values above are the first cell's; "
                     f"grid {plot.get('grid_size', '?')})")
    return "\n".join(lines)


def png_info(params: dict) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", a1111_text(params))
    info.add_itxt("ldm_studio", json.dumps(params, sort_keys=True))
    info.add_text("AI-generated", "true")
    info.add_text("Software", SOFTWARE)
    return info


def save_png(image: Image.Image, params: dict, out_dir: str | os.PathLike, stem: str | None = None,
             watermark: bool = True) -> Path:
    """Write `image` as a PNG carrying `params` and (by default) the invisible watermark;
    returns its path (a fresh unique name)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem or params.get('task', 'image')}-{params.get('seed', 'x')}-{uuid.uuid4().hex[:8]}.png"
    if watermark:
        image = _wm.embed(image)
    image.save(path, format="PNG", pnginfo=png_info(params))
    return path


def read_watermark(src) -> _wm.Reading:
    """The invisible watermark of an image (a path or a PIL image): `.found` is True when it
    carries the studio's mark; `.matched` says how many of its 32 bits were read right."""
    if isinstance(src, Image.Image):
        return _wm.read(src)
    with Image.open(src) as img:
        return _wm.read(img)


def read_parameters(src) -> dict | None:
    """The parameters stored in a PNG by `save_png` (None when it has none)."""
    img = src if isinstance(src, Image.Image) else Image.open(src)
    text = getattr(img, "text", None) or img.info
    raw = text.get("ldm_studio")
    if raw:
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return None
    return None


def is_ai_generated(src) -> bool:
    img = src if isinstance(src, Image.Image) else Image.open(src)
    return (getattr(img, "text", None) or img.info).get("AI-generated") == "true"
