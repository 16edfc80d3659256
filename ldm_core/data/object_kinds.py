"""Shapes World's object kinds as classes (the built-in class-conditional model's, paper §4.1):
"<colour> <shape>", colours in `PALETTE` order and, within a colour, shapes in `SHAPES` order
(0 "red circle", 1 "red square", ..., 23 "magenta diamond"); and a class's scene."""
from __future__ import annotations

import random

from .shapes import COLORS, SHAPES, Scene, draw_objects, place_objects

CLASS_NAMES = tuple(f"{c} {s}" for c in COLORS for s in SHAPES)   # PALETTE order x SHAPES order
NULL_CLASS = len(CLASS_NAMES)                                      # 24: "no class", for guidance


def class_scene(seed: int, label: int, max_objects: int = 3, render: bool = True) -> Scene:
    """1..max_objects objects (equally likely), all of class `label`; a pure function of the seed."""
    rng = random.Random(seed)
    color, shape = CLASS_NAMES[label].split()
    objects = place_objects(rng, [(color, shape)] * rng.randint(1, max_objects))
    scene = Scene(objects, CLASS_NAMES[label], "class")
    if render:
        scene.image = draw_objects(objects)
    return scene
