"""Shapes World: the procedural data the built-in models learn from.

Follows ``docs/shapes-world.md`` exactly: a 64x64 white canvas, six palette
colours, four shapes of integer size s in [12, 28], 1-3 objects whose boxes do not
overlap and keep 2 px apart, anti-aliased by rendering at 4x and box-downsampling,
and captions in the four spec forms. Everything is a pure function of the seed.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

CANVAS = 64
SUPERSAMPLE = 4
MIN_SIZE = 12
MAX_SIZE = 28
GAP = 2
RELATION_MIN_PX = 8

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "yellow": (230, 200, 30),
    "green": (40, 170, 60),
    "cyan": (30, 180, 200),
    "blue": (40, 70, 220),
    "magenta": (200, 50, 190),
}
COLORS = tuple(PALETTE)
SHAPES = ("circle", "square", "triangle", "diamond")
RELATIONS = ("left of", "right of", "above", "below")
CAPTION_FORMS = ("one", "two", "relation", "three")


@dataclass(frozen=True)
class ShapeObject:
    color: str
    shape: str
    x: int  # left edge, pixels
    y: int  # top edge, pixels
    size: int  # side of the square bounding box, pixels

    @property
    def label(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def box_px(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.x + self.size, self.y + self.size)

    @property
    def box(self) -> tuple[float, float, float, float]:
        """Tight bounding box normalised to [0, 1] (pixel coordinates / 64)."""
        return tuple(v / CANVAS for v in self.box_px)  # type: ignore[return-value]

    @property
    def center(self) -> tuple[float, float]:
        return (self.x + self.size / 2, self.y + self.size / 2)


@dataclass
class Scene:
    objects: list[ShapeObject]
    caption: str
    form: str
    relation: str | None = None
    image: np.ndarray = field(default=None, repr=False)  # (64, 64, 3) uint8

    @property
    def boxes(self) -> list[dict]:
        return [{"label": o.label, "box": list(o.box)} for o in self.objects]


def relation_holds(a: ShapeObject, b: ShapeObject, relation: str) -> bool:
    """Spec: "A left of B" = A's centre x smaller than B's by at least 8 px, etc."""
    (ax, ay), (bx, by) = a.center, b.center
    return {
        "left of": bx - ax >= RELATION_MIN_PX,
        "right of": ax - bx >= RELATION_MIN_PX,
        "above": by - ay >= RELATION_MIN_PX,
        "below": ay - by >= RELATION_MIN_PX,
    }[relation]


def _apart(a: ShapeObject, b: ShapeObject) -> bool:
    ax0, ay0, ax1, ay1 = a.box_px
    bx0, by0, bx1, by1 = b.box_px
    return ax1 + GAP <= bx0 or bx1 + GAP <= ax0 or ay1 + GAP <= by0 or by1 + GAP <= ay0


def draw_objects(objects: list[ShapeObject], width: int = CANVAS, height: int = CANVAS) -> np.ndarray:
    """Render objects on a white canvas; returns (height, width, 3) uint8 (64 x 64: the world's)."""
    k = SUPERSAMPLE
    big = Image.new("RGB", (width * k, height * k), (255, 255, 255))
    d = ImageDraw.Draw(big)
    for o in objects:
        fill = PALETTE[o.color]
        x0, y0 = o.x * k, o.y * k
        s = o.size * k
        x1, y1 = x0 + s, y0 + s  # exclusive edges in supersampled pixels
        if o.shape == "circle":
            d.ellipse([x0, y0, x1 - 1, y1 - 1], fill=fill)
        elif o.shape == "square":
            d.rectangle([x0, y0, x1 - 1, y1 - 1], fill=fill)
        elif o.shape == "triangle":
            d.polygon([(x0 + s / 2 - 0.5, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=fill)
        elif o.shape == "diamond":
            cx, cy = x0 + s / 2 - 0.5, y0 + s / 2 - 0.5
            d.polygon([(cx, y0), (x1 - 1, cy), (cx, y1 - 1), (x0, cy)], fill=fill)
        else:
            raise ValueError(f"unknown shape {o.shape!r}; expected one of {SHAPES}")
    return np.asarray(big.reduce(k))  # box filter, 4x -> 1x


def place_objects(rng: random.Random, specs: list[tuple[str, str]], max_tries: int = 200) -> list[ShapeObject]:
    """Place (colour, shape) pairs at random sizes/positions, boxes apart by >= 2 px."""
    for _ in range(max_tries):
        placed: list[ShapeObject] = []
        for color, shape in specs:
            for _ in range(50):
                s = rng.randint(MIN_SIZE, MAX_SIZE)
                o = ShapeObject(color, shape, rng.randint(0, CANVAS - s), rng.randint(0, CANVAS - s), s)
                if all(_apart(o, p) for p in placed):
                    placed.append(o)
                    break
            else:
                break
        if len(placed) == len(specs):
            return placed
    raise RuntimeError(f"could not place {specs} on a {CANVAS}px canvas")


def caption_for(objects: list[ShapeObject], form: str, relation: str | None = None) -> str:
    a = [f"a {o.color} {o.shape}" for o in objects]
    if form == "one":
        return a[0]
    if form == "two":
        return f"{a[0]} and {a[1]}"
    if form == "relation":
        return f"{a[0]} {relation} {a[1]}"
    if form == "three":
        return f"{a[0]}, {a[1]} and {a[2]}"
    raise ValueError(f"unknown caption form {form!r}; expected one of {CAPTION_FORMS}")


def sample_scene(seed: int, form: str | None = None, render: bool = True) -> Scene:
    """The scene for `seed`: deterministic. `form` forces a caption form (one of CAPTION_FORMS)."""
    rng = random.Random(seed)
    if form is None:
        form = rng.choice(CAPTION_FORMS)
    n = {"one": 1, "two": 2, "relation": 2, "three": 3}[form]
    specs = [(rng.choice(COLORS), rng.choice(SHAPES)) for _ in range(n)]
    objects = place_objects(rng, specs)
    relation = None
    if form == "relation":
        holding = [r for r in RELATIONS if relation_holds(objects[0], objects[1], r)]
        relation = rng.choice(holding)  # non-overlapping boxes always satisfy one relation
    scene = Scene(objects, caption_for(objects, form, relation), form, relation)
    if render:
        scene.image = draw_objects(objects)
    return scene


def render_batch(seeds, form: str | None = None) -> tuple[np.ndarray, list[Scene]]:
    """Render many scenes: returns images (N, 64, 64, 3) uint8 and their scenes."""
    scenes = [sample_scene(int(s), form) for s in seeds]
    return np.stack([s.image for s in scenes]), scenes
