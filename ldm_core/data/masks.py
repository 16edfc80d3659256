"""Random inpainting masks of several kinds (paper §4.5): what the inpainting stage trains on
and what its evaluation masks."""
from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageDraw

from .shapes import CANVAS, Scene

MASK_KINDS = ("object", "box", "stroke", "large")


def random_mask(scene: Scene, rng: random.Random, kind: str | None = None) -> np.ndarray:
    """(64, 64) bool, True = repaint. Kinds: one object's box (dilated), a random box of any
    size, brush strokes, or a large region (half the image or everything but a border)."""
    kind = kind or rng.choice(MASK_KINDS)
    m = Image.new("L", (CANVAS, CANVAS), 0)
    d = ImageDraw.Draw(m)
    if kind == "object" and scene.objects:
        o = rng.choice(scene.objects)
        pad = rng.randint(1, 4)
        x0, y0, x1, y1 = o.box_px
        d.rectangle([x0 - pad, y0 - pad, x1 + pad - 1, y1 + pad - 1], fill=255)
    elif kind == "box" or kind == "object":
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
