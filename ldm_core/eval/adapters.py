"""Adapters from the model stack to plain generate() callables.

The only evaluation code that knows the stack's API; everything else takes generate() callables.
ModelStack.from_catalog().run(request) -> a result whose .images[0] is a PIL image.

`speedups` goes into every request as it is: None (the default) lets the catalog model's own
default speed-ups run, so an eval measures what users get; "none", "deepcache", "bf16",
"deepcache,bf16" ask for those (ldm_core/speedups.py). Each callable's `ran` collects the results'
info["speedups"] (what ran, as the stack describes it), for the report.
"""
from __future__ import annotations

import numpy as np

from ldm_core.compositions import composition_of
from ldm_core.stack import ModelStack
from ldm_core.tasks import TASKS

Text2ImgRequest = TASKS["text2img"].request
Layout2ImgRequest = TASKS["layout2img"].request
InpaintRequest = TASKS["inpaint"].request
SuperResRequest = TASKS["superres"].request


def _runner(stack):
    """run(request) -> the first image (PIL); run.ran: the set of info["speedups"] seen."""
    def run(req):
        out = stack.run(req)
        run.ran.add(out.info.get("speedups", "none"))
        return out.images[0]
    run.ran = set()
    return run


def _composed_runner(stack):
    """As `_runner`, through the composition that applies to a request as the service runs it (the
    layout stage of compositions/grounded.py); run.plans: each result's planned boxes (None: none)."""
    def run(req):
        comp = composition_of(req)
        out = stack.run(req) if comp is None else comp.run(comp.plan(req, stack.catalog, stack.limits),
                                                           lambda r, cb: stack.run(r, cb), None)
        run.ran.add(out.info.get("speedups", "none"))
        run.plans.append(out.info.get("planned_boxes"))
        return out.images[0]
    run.ran, run.plans = set(), []
    return run


def _with_ran(fn, run):
    fn.ran = run.ran
    return fn


def stack_text2img(model: str, steps: int = 25, catalog: str | None = None, speedups: str | None = None,
                   stack=None, plan_layout: str | None = None):
    """generate(prompts, seeds) -> list of (64, 64, 3) uint8, via ModelStack + Text2ImgRequest; with
    `plan_layout` ("", "on", "off") through the layout stage as the service runs it (generate.plans: the
    planned boxes of each image, None where it drew from the caption alone)."""
    stack = stack or ModelStack.from_catalog(catalog)
    run = _runner(stack) if plan_layout is None else _composed_runner(stack)
    plan = {} if plan_layout is None else {"plan_layout": plan_layout}

    def generate(prompts: list[str], seeds: list[int]) -> list[np.ndarray]:
        return [np.asarray(run(Text2ImgRequest(prompt=p, seed=s, steps=steps, model=model, speedups=speedups,
                                               **plan)).convert("RGB")) for p, s in zip(prompts, seeds)]
    generate.plans = getattr(run, "plans", [])
    return _with_ran(generate, run)


def stack_layout2img(model: str, steps: int = 25, catalog: str | None = None, stack=None, size: int | None = None,
                     speedups: str | None = None):
    """generate(prompts, layouts, seeds) via ModelStack + Layout2ImgRequest (boxes: [{"label", "box"}]);
    size: a size × size canvas (default: the model's own size)."""
    run = _runner(stack or ModelStack.from_catalog(catalog))

    def generate(prompts: list[str], layouts: list[list[dict]], seeds: list[int]) -> list[np.ndarray]:
        return [np.asarray(run(Layout2ImgRequest(prompt=p, boxes=b, seed=s, steps=steps, model=model,
                                                 width=size, height=size, speedups=speedups)).convert("RGB"))
                for p, b, s in zip(prompts, layouts, seeds)]
    return _with_ran(generate, run)


def stack_text2img_guided(model: str, steps: int = 25, catalog: str | None = None, speedups: str | None = None):
    """generate(prompt, seed, guidance) -> (64, 64, 3) uint8, for guidance sweeps."""
    run = _runner(ModelStack.from_catalog(catalog))
    return _with_ran(lambda prompt, seed, g: np.asarray(run(Text2ImgRequest(
        prompt=prompt, seed=seed, steps=steps, model=model, guidance_scale=g, speedups=speedups)).convert("RGB")), run)


def stack_inpaint(model: str, steps: int = 25, catalog: str | None = None, speedups: str | None = None,
                  stack=None):
    """inpaint(prompt, image, mask, seed) -> PIL image, via ModelStack + InpaintRequest."""
    run = _runner(stack or ModelStack.from_catalog(catalog))
    return _with_ran(lambda prompt, image, mask, seed: run(InpaintRequest(
        prompt=prompt, image=image, mask=mask, seed=seed, steps=steps, model=model, speedups=speedups)), run)


def stack_superres(model: str, steps: int = 25, catalog: str | None = None, speedups: str | None = None,
                   stack=None):
    """upscale(image, seed) -> PIL image, via ModelStack + SuperResRequest."""
    run = _runner(stack or ModelStack.from_catalog(catalog))
    return _with_ran(lambda image, seed: run(SuperResRequest(image=image, seed=seed, steps=steps, model=model,
                                                             speedups=speedups)), run)
