"""Random inpainting masks of several kinds (paper §4.5): what the inpainting stage trains on
and what its evaluation masks."""
from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from .shapes import CANVAS, Scene, draw_objects

MASK_KINDS = ("object", "box", "stroke", "large")
# How a person masks one object (`object_mask`): a box a few px bigger, the exact box, a generous
# box, an ellipse around it, a brush blob painted over it, a box shifted to one side of it.
OBJECT_MASK_STYLES = ("pad", "tight", "loose", "ellipse", "brush", "offset")


def random_mask(scene: Scene, rng: random.Random, kind: str | None = None) -> np.ndarray:
    """(64, 64) bool, True = repaint. Kinds: one object's box (dilated), a random box of any
    size, brush strokes, or a large region (half the image or everything but a border)."""
    kind = kind or rng.choice(MASK_KINDS)
    if kind == "object-any" and scene.objects:   # any object, any of the styles people use
        return object_mask(scene, rng, rng.randrange(len(scene.objects)), rng.choice(OBJECT_MASK_STYLES))
    m = Image.new("L", (CANVAS, CANVAS), 0)
    d = ImageDraw.Draw(m)
    if kind == "object" and scene.objects:
        o = rng.choice(scene.objects)
        pad = rng.randint(1, 4)
        x0, y0, x1, y1 = o.box_px
        d.rectangle([x0 - pad, y0 - pad, x1 + pad - 1, y1 + pad - 1], fill=255)
    elif kind in ("box", "object", "object-any"):
        w, h = rng.randint(6, 48), rng.randint(6, 48)
        x, y = rng.randint(0, CANVAS - w), rng.randint(0, CANVAS - h)
        d.rectangle([x, y, x + w - 1, y + h - 1], fill=255)
    elif kind == "stroke":
        for _ in range(rng.randint(1, 3)):
            x, y = rng.uniform(0, CANVAS), rng.uniform(0, CANVAS)
            width = rng.randint(3, 10)
            for _ in range(rng.randint(3, 8)):
                nx = min(CANVAS, max(0, x + rng.uniform(-20, 20)))
                ny = min(CANVAS, max(0, y + rng.uniform(-20, 20)))
                d.line([x, y, nx, ny], fill=255, width=width, joint="curve")
                x, y = nx, ny
    else:  # large
        if rng.random() < 0.5:
            side = rng.choice(["left", "right", "top", "bottom"])
            half = CANVAS // 2
            box = {"left": [0, 0, half, CANVAS], "right": [half, 0, CANVAS, CANVAS],
                   "top": [0, 0, CANVAS, half], "bottom": [0, half, CANVAS, CANVAS]}[side]
            d.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], fill=255)
        else:
            b = rng.randint(4, 12)
            d.rectangle([0, 0, CANVAS - 1, CANVAS - 1], fill=255)
            d.rectangle([b, b, CANVAS - 1 - b, CANVAS - 1 - b], fill=0 if rng.random() < 0.5 else 255)
    a = np.asarray(m) > 127
    if not a.any():
        a[rng.randrange(CANVAS), rng.randrange(CANVAS)] = True
    return a


def object_mask(scene: Scene, rng: random.Random, index: int, style: str) -> np.ndarray:
    """(64, 64) bool covering every pixel of `scene.objects[index]`, drawn in one of
    OBJECT_MASK_STYLES; the mask may reach neighbouring objects, as a hand-drawn one does."""
    if style not in OBJECT_MASK_STYLES:
        raise ValueError(f"unknown object mask style {style!r}; expected one of {OBJECT_MASK_STYLES}")
    x0, y0, x1, y1 = scene.objects[index].box_px          # exclusive right / bottom edges
    m = Image.new("L", (CANVAS, CANVAS), 0)
    d = ImageDraw.Draw(m)
    if style in ("pad", "tight", "loose"):
        pad = {"pad": rng.randint(1, 4), "tight": 0, "loose": rng.randint(6, 10)}[style]
        d.rectangle([x0 - pad, y0 - pad, x1 + pad - 1, y1 + pad - 1], fill=255)
    elif style == "ellipse":      # the circumscribed ellipse of the box, plus a margin
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        r = (x1 - x0) / 2 * 1.42 + rng.uniform(0.5, 3)
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    elif style == "brush":        # zig-zag strokes over the object, close enough to cover it
        width = rng.randint(8, 12)
        rows = np.arange(y0 + width * 0.3, y1 + width * 0.3, width * 0.7)
        pts = [(x0 - rng.uniform(1, 4) if k % 2 == 0 else x1 + rng.uniform(1, 4), y + rng.uniform(-1, 1))
               for k, y in enumerate(rows)]
        d.line(pts, fill=255, width=width, joint="curve")
        for x, y in pts:
            d.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=255)
    else:                         # offset: the box grown to one side by up to half its size
        side = rng.choice("lrtb")
        grow = rng.randint(4, max(4, (x1 - x0) // 2))
        pad = rng.randint(1, 3)
        box = [x0 - pad, y0 - pad, x1 + pad - 1, y1 + pad - 1]
        i, sign = {"l": (0, -1), "r": (2, 1), "t": (1, -1), "b": (3, 1)}[side]
        box[i] += sign * grow
        d.rectangle(box, fill=255)
    a = np.asarray(m) > 127
    if style in ("ellipse", "brush"):   # a painted mask covers every pixel of the object, with a 3 px margin
        own = Image.fromarray((draw_objects([scene.objects[index]]) < 255).any(-1))
        a = a | np.asarray(own.filter(ImageFilter.MaxFilter(7)))
    return a
