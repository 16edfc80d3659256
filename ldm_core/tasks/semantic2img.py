"""Semantic synthesis (paper §4.3.2): a label map in, images out. The map is a PNG painted in the
model's class colours (nearest colour wins) or a greyscale PNG of class ids; the output is the
map's size unless width and height are given (the map is then resized, nearest), and sizes beyond
the training size are sampled convolutionally (the paper's landscapes at 1024×384)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

from ..data.label_maps import colorize, tiled_scene
from ..pipelines.semantic2img import SemanticPipeline
from ..requests import check_size, load_image
from .base import Task
from .unconditional import MODEL_OWN, check_eta


@dataclass(kw_only=True)
class Semantic2ImgRequest:
    label_map: Any                       # path, bytes or PIL image: class colours, or greyscale class ids
    steps: int | None = None
    seed: int = -1
    num_images: int = 1
    width: int | None = None             # None: the map's own size
    height: int | None = None
    sampler: str | None = None
    model: str | None = None
    eta: float | None = None             # DDIM's eta; None: the model's
    speedups: str | list[str] | None = None   # as Sampling's: None or "": the model's own


def check(req: Semantic2ImgRequest, entry, limits) -> dict:
    label_map = load_image(req.label_map, limits, what="label map", keep_grey=True)
    size = check_size(req, entry, limits, native=False)
    return {"label_map": label_map, "eta": check_eta(req, entry), **size}


def call(pipe, req: Semantic2ImgRequest, seeds, callback):
    return pipe(label_map=req.label_map, height=req.height, width=req.width, num_inference_steps=req.steps,
                seeds=seeds, sampler=req.sampler, eta=req.eta, callback=callback)


def info(req: Semantic2ImgRequest) -> dict:
    return {"eta": req.eta, "label_map_size": list(req.label_map.size)}


def output_size(req: Semantic2ImgRequest) -> tuple[int, int, int]:
    return req.width or req.label_map.width, req.height or req.label_map.height, 1


def example_map(side: int) -> Image.Image:
    """A Shapes World map (the built-in model's palette): scenes tiled at the world's scale."""
    t = max(1, side // 64)
    return Image.fromarray(colorize(tiled_scene(7, t, t)[2]))


TASK = Task(
    name="semantic2img",
    title="Semantic → Image",
    order=7,
    request=Semantic2ImgRequest,
    check=check,
    call=call,
    info=info,
    output_size=output_size,
    api_defaults=MODEL_OWN,
    pipelines={"SemanticPipeline": SemanticPipeline},
    example=lambda side: {"label_map": example_map(side)},
    positional=("label_map",),
    api=("label_map", "steps", "seed", "num_images", "width", "height", "sampler", "model", "speedups"),
    help="a label map (painted in the model's class colours, or greyscale class ids) in, images out",
)
