"""Shapes World as semantic maps (the built-in semantic model's data, paper §4.3.2): a label per
pixel, 0 "background" and 1 + k for object kind k of `object_kinds.CLASS_NAMES` ("red circle",
..., "magenta diamond"); each label has a paint colour (`PALETTE`), so a map is painted and shown
in colour and read back to labels by nearest colour.

A scene's map marks the pixels each object covers (its shape rendered at 4x, a pixel labelled
when at least half of it is covered), so painting a region "red circle" asks for a red circle
filling it. Larger canvases keep the world's scale: `tiled_scene` places scenes side by side,
objects 12-28 px on a 128² or 256² canvas as on the 64² one.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .object_kinds import CLASS_NAMES
from .shapes import CANVAS, PALETTE, SHAPES, SUPERSAMPLE, ShapeObject, sample_scene

SEMANTIC_CLASSES = ("background",) + CLASS_NAMES     # 25 labels
_SHADE = {"circle": 1.0, "square": 0.62, "triangle": 1.35, "diamond": 0.8}   # per shape, on the colour's ink


def _paint(color: str, shape: str) -> list[int]:
    """The colour a kind is painted in: its palette colour, darker or lighter by shape."""
    rgb = np.array(PALETTE[color], dtype=np.float64)
    f = _SHADE[shape]
    out = rgb * f if f <= 1 else 255 - (255 - rgb) / f     # > 1: towards white
    return [int(round(v)) for v in np.clip(out, 0, 255)]


PALETTE_RGB: list[list[int]] = [[255, 255, 255]] + [_paint(*name.split()) for name in CLASS_NAMES]


def label_of(name: str) -> int:
    """A class name ("red circle", "background") -> its label id."""
    try:
        return SEMANTIC_CLASSES.index(name.strip().lower())
    except ValueError:
        raise ValueError(f"unknown class {name!r}; classes: {', '.join(SEMANTIC_CLASSES)}") from None


def _shape_mask(o: ShapeObject, width: int, height: int, ox: int = 0, oy: int = 0) -> np.ndarray:
    """(height, width) bool: the pixels at least half covered by `o` (offset by ox, oy)."""
    k = SUPERSAMPLE
    im = Image.new("L", (width * k, height * k), 0)
    d = ImageDraw.Draw(im)
    x0, y0, s = (o.x + ox) * k, (o.y + oy) * k, o.size * k
    x1, y1 = x0 + s, y0 + s
    if o.shape == "circle":
        d.ellipse([x0, y0, x1 - 1, y1 - 1], fill=255)
    elif o.shape == "square":
        d.rectangle([x0, y0, x1 - 1, y1 - 1], fill=255)
    elif o.shape == "triangle":
        d.polygon([(x0 + s / 2 - 0.5, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=255)
    elif o.shape == "diamond":
        cx, cy = x0 + s / 2 - 0.5, y0 + s / 2 - 0.5
        d.polygon([(cx, y0), (x1 - 1, cy), (cx, y1 - 1), (x0, cy)], fill=255)
    else:
        raise ValueError(f"unknown shape {o.shape!r}; expected one of {SHAPES}")
    cover = np.asarray(im.reduce(k), dtype=np.float32) / 255.0
    return cover >= 0.5


def label_map(objects: list[ShapeObject], width: int = CANVAS, height: int = CANVAS,
              offsets: list[tuple[int, int]] | None = None) -> np.ndarray:
    """(height, width) uint8 labels of `objects` (each moved by its offset, if given)."""
    out = np.zeros((height, width), dtype=np.uint8)
    for i, o in enumerate(objects):
        ox, oy = offsets[i] if offsets else (0, 0)
        out[_shape_mask(o, width, height, ox, oy)] = label_of(o.label)
    return out


def colorize(labels: np.ndarray, palette: list[list[int]] | None = None) -> np.ndarray:
    """(H, W) labels -> (H, W, 3) uint8 paint colours."""
    pal = np.asarray(palette or PALETTE_RGB, dtype=np.uint8)
    if labels.max(initial=0) >= len(pal):
        raise ValueError(f"label {int(labels.max())} has no colour ({len(pal)} classes)")
    return pal[labels]


def labels_from_rgb(rgb: np.ndarray, palette: list[list[int]] | None = None, max_distance: float = 60.0
                    ) -> tuple[np.ndarray, float]:
    """(H, W, 3) painted colours -> (labels (H, W) uint8 by nearest paint colour, share of pixels
    farther than `max_distance` from every paint colour: what does not look painted with it)."""
    pal = np.asarray(palette or PALETTE_RGB, dtype=np.float32)               # (K, 3)
    px = np.asarray(rgb, dtype=np.float32)[..., :3].reshape(-1, 1, 3)        # (HW, 1, 3)
    d = np.sqrt(((px - pal[None]) ** 2).sum(-1))                             # (HW, K)
    labels = d.argmin(1)
    off = float((d.min(1) > max_distance).mean())
    return labels.reshape(rgb.shape[:2]).astype(np.uint16 if len(pal) > 255 else np.uint8), off


def tiled_scene(seed: int, tiles_x: int, tiles_y: int) -> tuple[list[ShapeObject], list[tuple[int, int]], np.ndarray]:
    """Scenes seed, seed+1, ... side by side on a (64 tiles_y) x (64 tiles_x) canvas: the objects,
    their offsets and the labels; the world's scale kept at any canvas size."""
    objects, offsets = [], []
    for j in range(tiles_y):
        for i in range(tiles_x):
            scene = sample_scene(seed + j * tiles_x + i, render=False)
            objects += scene.objects
            offsets += [(i * CANVAS, j * CANVAS)] * len(scene.objects)
    return objects, offsets, label_map(objects, CANVAS * tiles_x, CANVAS * tiles_y, offsets)
