"""Text -> image -> 4x in one request ("hires"): the paper's two-stage use of LDM-SR (§4.4) on
what a text- or layout-conditioned model drew. Each image of the first stage is upscaled by the
chosen super-resolution model with its own seed; the info records both stages."""
from __future__ import annotations

from dataclasses import replace

from .catalog import Catalog, CatalogError
from .limits import Limits
from .validation import RequestError


def check(req, catalog: Catalog, limits: Limits):
    """`req` with its super-resolution model named (its catalog default when unset), and the work the
    second stage adds in megapixel-steps. A request without `hires` (or with it off) is returned as is."""
    if not getattr(req, "hires", False):
        return req, 0.0
    if not isinstance(req.hires, bool):
        raise RequestError(f"hires must be true or false, got {str(req.hires)[:20]!r}")
    try:
        sr = catalog.get(req.hires_model or None, "superres")
    except CatalogError as e:
        raise RequestError(f"hires_model: {e}") from None
    if req.width * req.height > limits.max_superres_input_pixels:
        raise RequestError(f"hires upscales images of at most {limits.max_superres_input_pixels} pixels; "
                           f"{req.width}x{req.height} is more")
    work = 16 * req.width * req.height * sr.steps * sr.average * req.num_images / 1e6
    return replace(req, hires_model=sr.name), work


def upscale(stack, req, result, callback):
    """The first stage's `result`, each image upscaled 4x; the info says both stages."""
    from .stack import Result
    from .tasks.superres import SuperResRequest
    images, per_image, second = [], [], None
    for image, first in zip(result.images, result.per_image):
        second = stack.run(SuperResRequest(image=image, model=req.hires_model, seed=first["seed"]), callback)
        images += second.images
        per_image.append({**first, "width": req.width, "height": req.height, "size": second.info["size"],
                          "hires_model": req.hires_model,
                          "hires": _stage(second.info)})
    first_size = {"width": req.width, "height": req.height}      # the first stage's (what "reuse" sets)
    info = {**result.info, **first_size, "size": second.info["size"], "hires_model": req.hires_model,
            "hires": _stage(second.info)}
    return Result(images, per_image, info, result.seconds + second.seconds * len(images))


def _stage(info: dict) -> dict:
    keep = ("model", "steps", "sampler", "average", "back_projection", "size", "scheduler")
    return {k: info[k] for k in keep if k in info}
