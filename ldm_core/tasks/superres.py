"""4x super-resolution (paper §4.4): a low-resolution image in, an image 4x its size out."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..pipelines.superres import SuperResPipeline
from ..requests import load_image, whole
from .base import Task, example_scene

DEFAULT_BACK_PROJECTION = 5               # iterations onto the input


@dataclass(kw_only=True)
class SuperResRequest:
    image: Any                            # path, bytes or PIL image
    steps: int | None = None
    seed: int = -1
    model: str | None = None
    num_images: int = 1
    guidance_scale: float | None = None
    sampler: str | None = None
    back_projection: int = DEFAULT_BACK_PROJECTION   # iterations onto the input (0: off, as diffusers)
    average: int | None = None            # samples averaged per image (1: one, as diffusers); None or 0: the model's
    speedups: str | list[str] | None = None   # as Sampling's: None or "": the model's own


def check(req: SuperResRequest, entry, limits) -> dict:
    bp = DEFAULT_BACK_PROJECTION if req.back_projection is None else req.back_projection
    return {"image": load_image(req.image, limits, max_pixels=limits.max_superres_input_pixels),
            "back_projection": whole("back_projection", bp, 0, limits.max_back_projection),
            "average": whole("average", req.average or entry.average, 1, limits.max_average)}


def call(pipe, req: SuperResRequest, seeds, callback):
    return pipe(image=req.image, num_inference_steps=req.steps, seeds=seeds, sampler=req.sampler, callback=callback,
                back_projection=req.back_projection, average=req.average)


def info(req: SuperResRequest) -> dict:
    return {"average": req.average, "back_projection": req.back_projection}


def example(side: int) -> dict:
    return {"image": example_scene(side)[0]}


TASK = Task(
    name="superres",
    title="Super-resolution",
    order=2,
    request=SuperResRequest,
    check=check,
    call=call,
    info=info,
    output_size=lambda r: (r.image.width * 4, r.image.height * 4, r.average),
    pipelines={"SuperResPipeline": SuperResPipeline},
    example=example,
    positional=("image",),
    api=("image", "steps", "seed", "model", "back_projection", "average", "speedups"),
    api_defaults={"average": 0},
    returns_one=True,
    scale=4,
    help="a low-resolution image in, 4x its size out",
)
