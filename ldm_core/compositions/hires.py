"""Text -> image -> 4x in one request ("hires"): the paper's two-stage use of LDM-SR (§4.4) on
what a text- or layout-conditioned model drew. Each image of the first stage is upscaled by the
chosen super-resolution model with its own seed; the info records both stages."""
from __future__ import annotations

from ..catalog import Catalog, CatalogError
from ..jobs import Phase, phased
from ..limits import Limits
from ..requests import RequestError
from ..results import Result
from ..tasks import TASKS
from ..tasks.superres import SuperResRequest
from ..validation import Work, validate
from .base import Composition, Plan

STAGE_KEYS = ("model", "steps", "sampler", "average", "back_projection", "size", "scheduler")


def applies(request) -> bool:
    return bool(getattr(request, "hires", False))


def plan(request, catalog: Catalog, limits: Limits) -> Plan:
    """The first stage checked, the super-resolution model named (its catalog default when unset),
    and the work of both stages."""
    if not isinstance(request.hires, bool):
        raise RequestError(f"hires must be true or false, got {str(request.hires)[:20]!r}")
    first = validate(request, catalog, limits)
    req = first.request
    try:
        sr = catalog.get(req.hires_model or None, "superres")
    except CatalogError as e:
        raise RequestError(f"hires_model: {e}") from None
    if req.width * req.height > limits.max_superres_input_pixels:
        raise RequestError(f"hires upscales images of at most {limits.max_superres_input_pixels} pixels; "
                           f"{req.width}x{req.height} is more")
    upscale = Work(16 * req.width * req.height * sr.steps * sr.average * req.num_images / 1e6,
                   f"{req.num_images} x {sr.steps} steps to upscale them 4x")
    shares = (first.work.megapixel_steps, upscale.megapixel_steps / req.num_images)   # per stage, of the work
    return Plan(request, [first], first.work + upscale, data=(sr.name, shares))


def phases(n: int, shares: tuple[float, float]) -> list[Phase]:
    """The stages of a hires request of `n` images, for its progress: denoising, then upscaling each
    image; each with its share of the work and the stages after it. They share one list of the
    images finished so far (what a stopped request keeps)."""
    total = shares[0] + n * shares[1]
    denoise, upscale = shares[0] / total, shares[1] / total
    done, done_info = [], []
    stages = [Phase("denoising", 1, n + 1, denoise, (("upscaling", upscale),) * n, done, done_info, n)]
    stages += [Phase("upscaling", i + 2, n + 1, upscale, (("upscaling", upscale),) * (n - i - 1), done, done_info, n,
                     f"upscaling {i + 1} of {n}") for i in range(n)]
    return stages


def run(plan: Plan, run_task, callback) -> Result:
    """The first stage, then each of its images upscaled 4x; the info says both stages."""
    first = plan.first[0]
    req = first.request
    sr_model, shares = plan.data
    stages = phases(req.num_images, shares)
    result = run_task(first, phased(callback, stages[0]))
    images, per_image = stages[0].finished, stages[0].finished_info
    second = None
    for i, (image, params) in enumerate(zip(result.images, result.per_image)):
        second = run_task(SuperResRequest(image=image, model=sr_model, seed=params["seed"]),
                          phased(callback, stages[i + 1]))
        per_image.append({**params, "width": req.width, "height": req.height, "size": second.info["size"],
                          "hires_model": sr_model, "hires": _stage(second.info)})
        images += second.images
    first_size = {"width": req.width, "height": req.height}      # the first stage's (what "reuse" sets)
    info = {**result.info, **first_size, "size": second.info["size"], "hires_model": sr_model,
            "hires": _stage(second.info)}
    return Result(list(images), list(per_image), info, result.seconds + second.seconds * len(images))


def _stage(info: dict) -> dict:
    return {k: info[k] for k in STAGE_KEYS if k in info}


COMPOSITION = Composition(
    name="hires",
    title="Hires: then 4× super-resolution of each image",
    applies=applies,
    plan=plan,
    run=run,
    tasks=tuple(name for name, t in TASKS.items() if "hires" in t.request.__dataclass_fields__),
    needs=("superres",),
    help="each image of a text or layout request upscaled 4x by a super-resolution model",
)
