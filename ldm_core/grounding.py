"""Box grounding maps: how the built-in layout model is told what goes where.

Each labelled box becomes a grounding vector, its label's words as one-hot channels (one
per colour, one per shape, from the model's vocabulary) plus an occupancy channel, placed
on the latent grid where the box lies. A cell a box covers in part gets that fraction
(area coverage), so an edge that falls inside a 4-pixel latent cell is still located to
a fraction of it. The map is concatenated to the UNet's latent input, as the paper
concatenates its spatially aligned conditions (semantic maps, §4.3.2; low-resolution
images, §4.4; masks, §4.5); the caption (optional) still goes through cross-attention.

Why not box tokens read through cross-attention (paper §4.3) or GLIGEN's gated
self-attention over grounding tokens: the visual tokens of a UNet carry no position
encoding, so either way the network has to learn, from data, which token belongs at which
cell, which a model of this size and training budget does not (docs/design-notes.md);
placing each box's vector at its box makes the position explicit and leaves the network
only the drawing. Hub GLIGEN checkpoints keep their own mechanism (`GligenLayoutPipeline`).
"""
from __future__ import annotations

import re

import torch

from .data.shapes import COLORS, SHAPES

GROUNDING_WORDS = tuple(COLORS) + tuple(SHAPES)
GROUNDING_CHANNELS = len(GROUNDING_WORDS) + 1   # one per word, then occupancy
MAX_BOXES = 8

Box = tuple[float, float, float, float]


def parse_label(label: str) -> tuple[str | None, str | None]:
    """"red circle" -> ("red", "circle"). Either part may be left out ("circle", "red");
    "a"/"an"/"the" and plurals are accepted; any other word is an error naming the vocabulary."""
    color = None
    shape = None
    for w in re.findall(r"[a-z]+", label.lower()):
        if w in ("a", "an", "the"):
            continue
        if w.endswith("s") and w[:-1] in SHAPES:
            w = w[:-1]
        if w in COLORS and color is None:
            color = w
        elif w in SHAPES and shape is None:
            shape = w
        else:
            raise ValueError(f"box label {label!r}: this model knows one colour of {', '.join(COLORS)} and one "
                             f"shape of {', '.join(SHAPES)} per box (got {w!r})")
    if color is None and shape is None:
        raise ValueError(f"box label {label!r} names no colour ({', '.join(COLORS)}) and no shape "
                         f"({', '.join(SHAPES)})")
    return color, shape


def check_box(box: Box) -> None:
    if len(box) != 4:
        raise ValueError(f"a box is [x0, y0, x1, y1], got {box!r}")
    x0, y0, x1, y1 = box
    if not all(0.0 <= v <= 1.0 for v in box):
        raise ValueError(f"box {list(box)} must lie inside the image (coordinates in [0, 1])")
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {list(box)} has no area (need x0 < x1 and y0 < y1)")


def _coverage(a: float, b: float, n: int) -> torch.Tensor:
    """(n,) fraction of each of n equal cells of [0, 1] that [a, b] covers."""
    edges = torch.arange(n + 1, dtype=torch.float64) / n
    return ((torch.minimum(edges[1:], torch.tensor(b)) - torch.maximum(edges[:-1], torch.tensor(a))) * n).clamp(0, 1)


def grounding_map(boxes: list[tuple[str | tuple[str | None, str | None], Box]], h: int, w: int) -> torch.Tensor:
    """Labelled boxes (label, [x0, y0, x1, y1] in [0, 1]) -> (G, h, w) float32 map on an h x w grid.

    A label is a string ("red circle") or an already parsed (colour, shape) pair, either part None."""
    if len(boxes) > MAX_BOXES:
        raise ValueError(f"at most {MAX_BOXES} boxes, got {len(boxes)}")
    g = torch.zeros(GROUNDING_CHANNELS, h, w, dtype=torch.float64)
    for label, box in boxes:
        check_box(box)
        color, shape = parse_label(label) if isinstance(label, str) else label
        x0, y0, x1, y1 = box
        cover = _coverage(y0, y1, h)[:, None] * _coverage(x0, x1, w)[None, :]  # (h, w)
        for word in (color, shape):
            if word is not None:
                g[GROUNDING_WORDS.index(word)] += cover
        g[-1] += cover
    return g.clamp_(0, 1).float()
