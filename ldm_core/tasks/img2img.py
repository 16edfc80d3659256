"""Image -> image (SDEdit, Meng et al. 2022): an input image noised to `strength` and denoised
towards the prompt by a text -> image model; 0 keeps the input, 1 ignores it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..pipelines.img2img import Img2ImgPipeline
from ..requests import SAMPLING_API, Sampling, check_size, load_image, number, own_size
from .base import Task, example_scene


@dataclass(kw_only=True)
class Img2ImgRequest(Sampling):
    image: Any                            # path, bytes or PIL image
    prompt: str = ""
    strength: float = 0.75                # share of the noise schedule the input is taken back through
    negative_prompt: str = ""


def check(req: Img2ImgRequest, entry, limits) -> dict:
    # width and height are optional (None or 0: the image's own size); any size: the pipeline pads to its model
    return {"image": load_image(req.image, limits), "strength": number("strength", req.strength, 0.0, 1.0),
            **check_size(req, entry, limits, native=False, multiple=1)}


def call(pipe, req: Img2ImgRequest, seeds, callback):
    w, h = own_size(req)
    return pipe(prompt=req.prompt, image=req.image, strength=req.strength, negative_prompt=req.negative_prompt,
                height=h, width=w, num_inference_steps=req.steps, guidance_scale=req.guidance_scale, seeds=seeds,
                sampler=req.sampler, callback=callback)


def info(req: Img2ImgRequest) -> dict:
    return {"prompt": req.prompt, "negative_prompt": req.negative_prompt, "guidance_scale": req.guidance_scale,
            "strength": req.strength}


def example(side: int) -> dict:
    return {"image": example_scene(side)[0], "prompt": "a green triangle"}


TASK = Task(
    name="img2img",
    title="Image → Image",
    order=4,
    request=Img2ImgRequest,
    check=check,
    call=call,
    info=info,
    output_size=lambda r: (*own_size(r), 1),
    pipelines={"Img2ImgPipeline": Img2ImgPipeline},
    example=example,
    positional=("image",),
    api=("image", "prompt", "strength", "negative_prompt", *SAMPLING_API, "speedups"),
    api_defaults={"width": 0, "height": 0},      # 0: the input image's own size
    help="an image noised to --strength and redrawn towards the prompt (SDEdit)",
)
