"""Inpainting (paper §4.5): an image and a mask in (white = repaint), the masked region redrawn.
Outpainting is the same task: the canvas is extended by `extend_*` pixels on any side and the
new area becomes the mask (with the painted mask, if any). `mask_blur` softens the seam."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from ..limits import DEFAULT_LIMITS, Limits
from ..options import MASK_DOWNSAMPLING
from ..pipelines.inpaint import InpaintPipeline
from ..pipelines.inpaint_paper import PaperInpaintPipeline
from ..provenance import read_parameters
from ..requests import SAMPLING_API, RequestError, Sampling, check_size, load_image, number, own_size, whole
from .base import Task, example_scene

SIDES = ("left", "top", "right", "bottom")
MAX_MASK_BLUR = 32.0
GRID = ("the image is an X/Y plot grid (several results side by side, its PNG info says so), not one picture: "
        "inpaint one cell of it, made on its own")


@dataclass(kw_only=True)
class InpaintRequest(Sampling):
    image: Any
    mask: Any = None                      # white = repaint, black = keep; optional when extending the canvas
    prompt: str = ""
    negative_prompt: str = ""
    keep_unmasked: bool = True            # pixels outside the mask exactly as given (False: as decoded, as diffusers)
    mask_downsampling: str = "max"        # to the latent grid: "max" (thin strokes kept) or "nearest" (diffusers)
    mask_blur: float = 2.0                # px: the seam's soft ramp inside the mask (0: a hard edge)
    extend_left: int = 0                  # outpainting: pixels added on each side, filled by the model
    extend_top: int = 0
    extend_right: int = 0
    extend_bottom: int = 0


def load_mask(src, size: tuple[int, int], limits: Limits = DEFAULT_LIMITS, empty_ok: bool = False) -> Image.Image:
    """A binary mask ("L", 0 or 255) of `size`: white = repaint. A mask of another size is
    resized (nearest) to the image; an all-black mask is an error (nothing to repaint) unless `empty_ok`."""
    m = load_image(src, limits, what="mask")
    if m.size != size:
        m = m.resize(size, Image.NEAREST)
    a = np.asarray(m.convert("L")) > 127
    if not a.any() and not empty_ok:
        raise RequestError("the mask is empty (all black): paint the region to repaint in white")
    return Image.fromarray((a * 255).astype("uint8"), "L")


def extend(image: Image.Image, mask: Image.Image | None, pads: tuple[int, int, int, int]
           ) -> tuple[Image.Image, Image.Image]:
    """The canvas grown by (left, top, right, bottom) pixels, its new area filled by repeating the
    edge, and the mask: the new area, with `mask` (on the original area) if given."""
    left, top, right, bottom = pads
    a = np.pad(np.asarray(image), ((top, bottom), (left, right), (0, 0)), mode="edge")
    m = np.ones(a.shape[:2], np.uint8) * 255
    m[top:top + image.height, left:left + image.width] = np.asarray(mask) if mask is not None else 0
    return Image.fromarray(a), Image.fromarray(m, "L")


def check_extension(req: InpaintRequest, image: Image.Image, limits) -> tuple[int, int, int, int]:
    pads = tuple(whole(f"extend_{side}", getattr(req, f"extend_{side}"), 0, limits.max_side) for side in SIDES)
    w, h = image.width + pads[0] + pads[2], image.height + pads[1] + pads[3]
    if max(w, h) > limits.max_side or w * h > limits.max_input_pixels:
        raise RequestError(f"the extended canvas would be {w}x{h}; at most {limits.max_side} a side and "
                           f"{limits.max_input_pixels} pixels")
    return pads


def check(req: InpaintRequest, entry, limits) -> dict:
    image = load_image(req.image, limits)
    if "xyplot" in (read_parameters(image) or {}):        # an X/Y plot keeps its axes there
        raise RequestError(GRID)
    pads = check_extension(req, image, limits)
    if req.mask is None and not any(pads):
        raise RequestError("no mask given: paint the region to repaint, or extend the canvas (outpainting)")
    mask = None if req.mask is None else load_mask(req.mask, image.size, limits, empty_ok=any(pads))
    if any(pads):
        image, mask = extend(image, mask, pads)
    if not isinstance(req.keep_unmasked, bool):
        raise RequestError(f"keep_unmasked must be true or false, got {str(req.keep_unmasked)[:20]!r}")
    if req.guidance_scale > 1 and not entry.guided:       # the paper's inpainting_big: no unconditional mode
        raise RequestError(f"{entry.name} has no text conditioning and no unconditional prediction, so "
                           f"classifier-free guidance cannot run: set guidance to 1")
    if req.mask_downsampling not in MASK_DOWNSAMPLING:
        raise RequestError(f"mask_downsampling must be one of {', '.join(MASK_DOWNSAMPLING)}, "
                           f"got {str(req.mask_downsampling)[:20]!r}")
    # width and height are optional (the image's own size); any size: the pipeline pads to its model
    return {"image": image, "mask": mask, "mask_blur": number("mask_blur", req.mask_blur, 0.0, MAX_MASK_BLUR),
            **dict(zip((f"extend_{side}" for side in SIDES), pads)),
            **check_size(req, entry, limits, native=False, multiple=1)}


def call(pipe, req: InpaintRequest, seeds, callback):
    w, h = own_size(req)
    return pipe(prompt=req.prompt, image=req.image, mask_image=req.mask, negative_prompt=req.negative_prompt,
                height=h, width=w, num_inference_steps=req.steps, guidance_scale=req.guidance_scale, seeds=seeds,
                sampler=req.sampler, callback=callback, keep_unmasked=req.keep_unmasked,
                mask_downsampling=req.mask_downsampling, mask_blur=req.mask_blur)


def info(req: InpaintRequest) -> dict:
    return {"prompt": req.prompt, "negative_prompt": req.negative_prompt, "guidance_scale": req.guidance_scale,
            "keep_unmasked": req.keep_unmasked, "mask_downsampling": req.mask_downsampling, "mask_blur": req.mask_blur,
            **{f"extend_{side}": getattr(req, f"extend_{side}") for side in SIDES}}


def example(side: int) -> dict:
    image, mask = example_scene(side)
    return {"image": image, "mask": mask, "prompt": "a green triangle"}


TASK = Task(
    name="inpaint",
    title="Inpainting",
    order=3,
    request=InpaintRequest,
    check=check,
    call=call,
    info=info,
    output_size=lambda r: (*own_size(r), 1),
    pipelines={"InpaintPipeline": InpaintPipeline, "PaperInpaintPipeline": PaperInpaintPipeline},
    example=example,
    positional=("image", "mask"),
    api=("image", "mask", "prompt", "negative_prompt", *SAMPLING_API, "keep_unmasked", "mask_downsampling",
         "mask_blur", *(f"extend_{side}" for side in SIDES), "speedups"),
    # 0: the input's own size (the extended canvas); steps and guidance unset: the model's own
    # (inpainting_big has no guidance: 1, 50 steps)
    api_defaults={"width": 0, "height": 0, "steps": None, "guidance_scale": None},
    help="an image and a mask (white = repaint, black = keep) in; --extend-* pixels: outpainting",
)
