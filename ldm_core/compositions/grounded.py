"""Text -> layout -> image ("grounded"): a learned caption -> layout stage in front of a layout model,
as LayoutGPT and LLM-grounded diffusion (Lian et al. 2023) plan the boxes first and then draw them.

A text request whose model names a `planner` and a `layout_model` in the catalog has its caption read by
the planner (`ldm_core/planner.py`, trained by `python -m ldm_core.train planner`), which writes the
objects it names and their boxes; the layout model (the built-in grounding-map model, or GLIGEN for a
hub text model) draws those boxes with the caption. A relation word so becomes a box arrangement.

`plan_layout` on the request: "on" (refused with the reason where it cannot run), "off", or "" (the
model's own: the catalog's `plan_layout`; then a caption the planner cannot read, or regional prompts,
are drawn from the caption alone, and the info says why under `layout_plan_skipped`). With `hires`, the
layout stage's images are upscaled as hires upscales any layout request. The info is a text request's
(task, model, prompt: what "reuse" fills back in) with the planned boxes (`planned_boxes`), the
planner and the layout model that drew them.

Module order matters: the service takes the first composition that applies, and "grounded" sorts
before "hires", which it runs inside itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..catalog import Catalog, CatalogError, ModelEntry
from ..limits import Limits
from ..pipelines.common import resolve_seeds
from ..planner import LayoutPlanner, PlannerError, load_planner
from ..requests import RequestError
from ..results import Result
from ..tasks.layout2img import TASK as LAYOUT
from ..tasks.layout2img import Box, Layout2ImgRequest
from ..tasks.text2img import TASK as TEXT
from ..tasks.text2img import Text2ImgRequest
from ..validation import Checked, validate
from . import hires
from .base import Composition, Plan


@dataclass
class Grounded:
    """What a planned request runs: the text request checked, and either its layout stage or why none."""
    text: Checked
    inner: Plan                          # the layout request's plan (hires' when hires is on), or the text one's
    boxes: list[Box] | None = None       # the planned boxes; None: drawn from the caption alone
    skipped: str = ""                    # why the stage did not run ("" when it did, or is off for this model)


def applies(request) -> bool:
    return isinstance(request, Text2ImgRequest) and request.plan_layout != "off"


@lru_cache(maxsize=4)
def _planner(folder: Path) -> LayoutPlanner:
    """A planner, loaded once per process (a few MB on the CPU: the stack's memory budget ignores it)."""
    return load_planner(folder)


def planner_of(catalog: Catalog, entry: ModelEntry) -> LayoutPlanner:
    """The entry's planner (its folder relative to the catalog's models, like a built-in `source`)."""
    try:
        return _planner((catalog.root / entry.planner).resolve())
    except FileNotFoundError as e:
        raise RequestError(f"{entry.name}'s layout planner: {e}") from None


def why_not(req: Text2ImgRequest, entry: ModelEntry, catalog: Catalog) -> str:
    """Why this request cannot be planned ("" when it can)."""
    if not (entry.planner and entry.layout_model):
        return (f"{entry.name} has no layout stage (its catalog entry names no `planner` and `layout_model`); "
                f"set plan_layout to off")
    if req.regions:
        return "regional prompts place their own boxes: give regions or plan_layout on, not both"
    try:
        catalog.get(entry.layout_model, "layout2img")
    except CatalogError as e:
        raise RequestError(f"{entry.name}'s layout_model: {e}") from None
    return ""


def _inner(request, catalog: Catalog, limits: Limits) -> Plan:
    """One stage request planned: hires' plan when hires is on, else the request checked."""
    if request.hires:
        return hires.plan(request, catalog, limits)
    checked = validate(request, catalog, limits)
    return Plan(request, [checked], checked.work)


def plan(request: Text2ImgRequest, catalog: Catalog, limits: Limits) -> Plan:
    """The caption planned into boxes and the layout request that draws them, checked; or the text
    request itself where the stage is off for its model or cannot read the caption (plan_layout "")."""
    text = validate(request, catalog, limits)
    req, entry = text.request, text.entry
    wanted = request.plan_layout == "on" or entry.plan_layout
    reason = why_not(req, entry, catalog) if wanted else ""
    seed = resolve_seeds(req.seed, 1)[0]
    boxes = None
    if wanted and not reason:
        try:
            boxes = [Box(label, box) for label, box in planner_of(catalog, entry).plan(req.prompt, seed)]
        except PlannerError as e:
            reason = str(e)
    if reason and request.plan_layout == "on":
        raise RequestError(f"plan_layout: {reason}")
    if boxes is None:
        inner = _inner(request, catalog, limits)
        return Plan(request, inner.first, inner.work, Grounded(text, inner, None, reason if wanted else ""))
    layout = Layout2ImgRequest(prompt=req.prompt, boxes=boxes, negative_prompt=req.negative_prompt, steps=req.steps,
                               guidance_scale=req.guidance_scale, seed=seed, num_images=req.num_images,
                               width=req.width, height=req.height, sampler=req.sampler, model=entry.layout_model,
                               speedups=request.speedups, hires=req.hires, hires_model=req.hires_model)
    inner = _inner(layout, catalog, limits)
    return Plan(request, inner.first, inner.work, Grounded(text, inner, boxes))


def run(plan: Plan, run_task, callback) -> Result:
    """The stage's request (through hires when it is on); its info as the text request's, with the plan."""
    g: Grounded = plan.data
    if g.inner.data is not None:       # hires' plan
        result = hires.COMPOSITION.run(g.inner, run_task, callback)
    else:
        result = run_task(g.inner.first[0], callback)
    own = own_info(g)
    return Result(result.images, [_as_text(p, own) for p in result.per_image], _as_text(result.info, own),
                  result.seconds)


def own_info(g: Grounded) -> dict:
    """What the text request records of the stage."""
    req, entry = g.text.request, g.text.entry
    if g.boxes is None:      # drawn from the caption: said only where the stage would have run
        return {"plan_layout": req.plan_layout, "layout_plan_skipped": g.skipped} if g.skipped else {}
    return {"task": "text2img", "model": entry.name, "plan_layout": req.plan_layout, "planner": entry.planner,
            "layout_model": entry.layout_model, "regions": [],
            "planned_boxes": [{"label": b.label, "box": list(b.box)} for b in g.boxes]}


def _as_text(info: dict, own: dict) -> dict:
    return {**{k: v for k, v in info.items() if k != "boxes"}, **own}


COMPOSITION = Composition(
    name="grounded",
    title="Layout stage: plan the caption's boxes, then draw them with the layout model",
    applies=applies,
    plan=plan,
    run=run,
    # the text tab shows its panel (the planned boxes); the layout tab receives them for editing
    tasks=(TEXT.name, LAYOUT.name),
    needs=(LAYOUT.name,),
    help="a learned caption -> layout stage in front of a layout model (plan_layout: '' = the model's own)",
)
