"""Inpainting (paper §4.5): an image and a mask in (white = repaint), the masked region redrawn."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from PIL import Image

from ..limits import DEFAULT_LIMITS, Limits
from ..options import MASK_DOWNSAMPLING
from ..validation import RequestError, Sampling, check_size, load_image
from . import Task
from .text2img import SAMPLING_API


@dataclass(kw_only=True)
class InpaintRequest(Sampling):
    image: Any
    mask: Any                             # white = repaint, black = keep
    prompt: str = ""
    negative_prompt: str = ""
    keep_unmasked: bool = True            # pixels outside the mask exactly as given (False: as decoded, as diffusers)
    mask_downsampling: str = "max"        # to the latent grid: "max" (thin strokes kept) or "nearest" (diffusers)


def load_mask(src, size: tuple[int, int], limits: Limits = DEFAULT_LIMITS) -> Image.Image:
    """A binary mask ("L", 0 or 255) of `size`: white = repaint. A mask of another size is
    resized (nearest) to the image; an all-black mask is an error (nothing to repaint)."""
    import numpy as np
    m = load_image(src, limits, what="mask")
    if m.size != size:
        m = m.resize(size, Image.NEAREST)
    a = np.asarray(m.convert("L")) > 127
    if not a.any():
        raise RequestError("the mask is empty (all black): paint the region to repaint in white")
    return Image.fromarray((a * 255).astype("uint8"), "L")


def check(req: InpaintRequest, entry, limits) -> dict:
    image = load_image(req.image, limits)
    if not isinstance(req.keep_unmasked, bool):
        raise RequestError(f"keep_unmasked must be true or false, got {str(req.keep_unmasked)[:20]!r}")
    if req.mask_downsampling not in MASK_DOWNSAMPLING:
        raise RequestError(f"mask_downsampling must be one of {', '.join(MASK_DOWNSAMPLING)}, "
                           f"got {str(req.mask_downsampling)[:20]!r}")
    # width and height are optional (the image's own size); any size: the pipeline pads to its model
    return {"image": image, "mask": load_mask(req.mask, image.size, limits),
            **check_size(req, entry, limits, native=False, multiple=1)}


def size(req: InpaintRequest) -> tuple[int, int]:
    return req.width or req.image.width, req.height or req.image.height


def call(pipe, req: InpaintRequest, seeds, callback):
    w, h = size(req)
    return pipe(prompt=req.prompt, image=req.image, mask_image=req.mask, negative_prompt=req.negative_prompt,
                height=h, width=w, num_inference_steps=req.steps, guidance_scale=req.guidance_scale, seeds=seeds,
                sampler=req.sampler, callback=callback, keep_unmasked=req.keep_unmasked,
                mask_downsampling=req.mask_downsampling)


def info(req: InpaintRequest) -> dict:
    return {"prompt": req.prompt, "negative_prompt": req.negative_prompt, "guidance_scale": req.guidance_scale,
            "keep_unmasked": req.keep_unmasked, "mask_downsampling": req.mask_downsampling}


def pipelines() -> dict:
    from ..pipelines.inpaint import InpaintPipeline
    return {"InpaintPipeline": InpaintPipeline}


TASK = Task(name="inpaint", title="Inpainting", order=3, request=InpaintRequest, check=check, call=call, info=info,
            output_size=lambda r: (*size(r), 1), pipelines=pipelines, positional=("image", "mask"),
            api=("image", "mask", "prompt", "negative_prompt", *SAMPLING_API, "keep_unmasked", "mask_downsampling"),
            help="an image and a mask (white = repaint, black = keep) in")
