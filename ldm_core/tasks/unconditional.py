"""Unconditional synthesis (paper §4.2): nothing in but a seed, images out (faces, churches,
bedrooms from the paper's zoo; Shapes World scenes from the built-in model)."""
from __future__ import annotations

from dataclasses import dataclass

from ..pipelines.unconditional import UnconditionalPipeline
from ..requests import RequestError, check_size, number
from .base import Task


# the API's defaults for these: unset, so the chosen model's own apply (celeba256: 200 DDIM steps at 256²)
MODEL_OWN = {"sampler": "", **{f: None for f in ("steps", "guidance_scale", "width", "height", "eta")}}


@dataclass(kw_only=True)
class UnconditionalRequest:
    steps: int | None = None             # None: the model's default
    seed: int = -1                       # -1: random; image i gets seed + i
    num_images: int = 1
    width: int | None = None
    height: int | None = None
    sampler: str | None = None
    model: str | None = None
    eta: float | None = None             # DDIM's eta; None: the model's (the paper's scripts)
    speedups: str | list[str] | None = None   # as Sampling's: None or "": the model's own


def check_eta(req, entry) -> float:
    """DDIM's eta, the model's when unset; refused with another sampler than DDIM."""
    eta = number("eta", entry.eta if req.eta is None else req.eta, 0.0, 1.0)
    if eta and req.sampler != "DDIM":
        raise RequestError(f"eta = {eta:g} applies to the DDIM sampler only (the sampler is {req.sampler}); "
                           f"set eta to 0 or pick DDIM")
    return eta


def check(req: UnconditionalRequest, entry, limits) -> dict:
    return {"eta": check_eta(req, entry), **check_size(req, entry, limits)}


def call(pipe, req: UnconditionalRequest, seeds, callback):
    return pipe(height=req.height, width=req.width, num_inference_steps=req.steps, seeds=seeds, sampler=req.sampler,
                eta=req.eta, callback=callback)


def info(req: UnconditionalRequest) -> dict:
    return {"eta": req.eta}


def example(side: int) -> dict:
    return {"width": side, "height": side}


TASK = Task(
    name="unconditional",
    title="Unconditional",
    order=5,
    request=UnconditionalRequest,
    check=check,
    call=call,
    info=info,
    output_size=lambda r: (r.width, r.height, 1),
    api_defaults=MODEL_OWN,
    pipelines={"UnconditionalPipeline": UnconditionalPipeline},
    example=example,
    api=("num_images", "steps", "seed", "sampler", "eta", "width", "height", "model", "speedups"),
    help="images from noise alone (the paper's CelebA-HQ, FFHQ, LSUN models; Shapes World scenes)",
)
