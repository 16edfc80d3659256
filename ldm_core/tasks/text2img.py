"""Text -> image (paper §4.3.1): a caption in, images out."""
from __future__ import annotations

from dataclasses import dataclass

from ..pipelines.text2img import Text2ImgPipeline
from ..requests import SAMPLING_API, RequestError, Sampling, check_size
from .base import Task


@dataclass(kw_only=True)
class Text2ImgRequest(Sampling):
    prompt: str
    negative_prompt: str = ""
    hires: bool = False                   # then 4x super-resolution of each image (ldm_core/compositions/hires.py)
    hires_model: str | None = None        # its super-resolution model; None: the catalog's default


def check(req: Text2ImgRequest, entry, limits) -> dict:
    if not req.prompt:
        raise RequestError("the prompt is empty: describe the image, e.g. 'a red circle left of a blue square'")
    return check_size(req, entry, limits)


def call(pipe, req: Text2ImgRequest, seeds, callback):
    return pipe(prompt=req.prompt, negative_prompt=req.negative_prompt, height=req.height, width=req.width,
                num_inference_steps=req.steps, guidance_scale=req.guidance_scale, seeds=seeds, sampler=req.sampler,
                callback=callback)


def info(req: Text2ImgRequest) -> dict:
    return {"prompt": req.prompt, "negative_prompt": req.negative_prompt, "guidance_scale": req.guidance_scale}


def example(side: int) -> dict:
    return {"prompt": "a red circle left of a blue square", "width": side, "height": side}


TASK = Task(
    name="text2img",
    title="Text → Image",
    order=0,
    request=Text2ImgRequest,
    check=check,
    call=call,
    info=info,
    output_size=lambda r: (r.width, r.height, 1),
    pipelines={"Text2ImgPipeline": Text2ImgPipeline},
    example=example,
    positional=("prompt",),
    api=("prompt", "negative_prompt", *SAMPLING_API, "hires", "hires_model", "speedups"),
    api_defaults={"hires_model": ""},
    help="a caption in, images out (--hires: then 4x each)",
)
