"""Text -> image (paper §4.3.1): a caption in, images out; optionally boxes with prompts of their own
(regional prompts: each box guided by its prompt, `pipelines/regional.py`)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..limits import DEFAULT_LIMITS, Limits
from ..pipelines.common import guided
from ..pipelines.regional import MAX_REGIONS
from ..pipelines.text2img import Text2ImgPipeline
from ..requests import SAMPLING_API, RequestError, Sampling, check_box, check_size, text
from .base import Task

REGIONS_EXAMPLE = '[{"prompt": "a blue square", "box": [0.5, 0, 1, 1]}]'
PLAN_LAYOUT = ("", "on", "off")    # the layout stage (ldm_core/compositions/grounded.py): "" = the model's own


@dataclass(frozen=True)
class Region:
    prompt: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in [0, 1]


@dataclass(kw_only=True)
class Text2ImgRequest(Sampling):
    prompt: str
    negative_prompt: str = ""
    hires: bool = False                   # then 4x super-resolution of each image (ldm_core/compositions/hires.py)
    hires_model: str | None = None        # its super-resolution model; None: the catalog's default
    regions: list[Region] | str = field(default_factory=list)   # regional prompts; JSON text is parsed by validate()
    plan_layout: str = ""                 # a learned layout stage plans boxes a layout model draws: "on", "off",
                                          # "" = the model's own (catalog `plan_layout`; compositions/grounded.py)


def _json_list(raw, limits: Limits) -> list:
    """The regions' JSON text (or a list) as a list."""
    if isinstance(raw, str):
        if len(raw) > limits.max_boxes_json_chars:
            raise RequestError(f"regions JSON is too long ({len(raw)} characters; limit {limits.max_boxes_json_chars})")
        try:
            raw = json.loads(raw) if raw.strip() else []
        except json.JSONDecodeError as e:
            raise RequestError(f"regions is not valid JSON: {e.msg} at character {e.pos}") from None
        except (RecursionError, ValueError):
            raise RequestError(f"regions JSON cannot be read: give a flat list like {REGIONS_EXAMPLE}") from None
    if not isinstance(raw, list):
        raise RequestError(f"regions must be a JSON list like {REGIONS_EXAMPLE}")
    if len(raw) > MAX_REGIONS:
        raise RequestError(f"{len(raw)} regions given; at most {MAX_REGIONS} are supported")
    return raw


def parse_regions(raw, limits: Limits = DEFAULT_LIMITS) -> list[Region]:
    """Regions from JSON text or a list of {"prompt": str, "box": [x0, y0, x1, y1]} (fractions of the image)."""
    regions = []
    for i, r in enumerate(_json_list(raw, limits), 1):
        if isinstance(r, Region):
            r = {"prompt": r.prompt, "box": r.box}
        if not isinstance(r, dict) or "prompt" not in r or "box" not in r:
            raise RequestError(f'region {i} must be an object with "prompt" and "box" keys, e.g. {REGIONS_EXAMPLE}')
        prompt = text(f"region {i}'s prompt", r["prompt"], limits)
        if not prompt:
            raise RequestError(f"region {i}: its prompt is empty: say what this box shows, e.g. 'a blue square'")
        regions.append(Region(prompt, check_box(f"region {i}", r["box"])))
    return regions


def check(req: Text2ImgRequest, entry, limits) -> dict:
    if not req.prompt:
        raise RequestError("the prompt is empty: describe the image, e.g. 'a red circle left of a blue square'")
    if req.plan_layout not in PLAN_LAYOUT:
        raise RequestError(f"plan_layout must be one of {', '.join(map(repr, PLAN_LAYOUT))} (\"\" = the model's own), "
                           f"got {str(req.plan_layout)[:20]!r}")
    return {**check_size(req, entry, limits), "regions": parse_regions(req.regions, limits)}


def call(pipe, req: Text2ImgRequest, seeds, callback):
    regions = {"regions": [(r.prompt, r.box) for r in req.regions]} if req.regions else {}
    return pipe(prompt=req.prompt, negative_prompt=req.negative_prompt, height=req.height, width=req.width,
                num_inference_steps=req.steps, guidance_scale=req.guidance_scale, seeds=seeds, sampler=req.sampler,
                callback=callback, **regions)


def info(req: Text2ImgRequest) -> dict:
    """The task's own parameters; `regions` always ([] for none), so that reusing a result clears old boxes."""
    return {"prompt": req.prompt, "negative_prompt": req.negative_prompt, "guidance_scale": req.guidance_scale,
            "regions": [{"prompt": r.prompt, "box": list(r.box)} for r in req.regions]}


def output_size(req: Text2ImgRequest) -> tuple[int, int, float]:
    """The work: each region adds a UNet pass per step to the one (or two, with guidance) of the prompt alone."""
    if not req.regions:
        return req.width, req.height, 1
    alone = 2 if guided(req.guidance_scale) else 1
    return req.width, req.height, (alone + len(req.regions)) / alone


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
    output_size=output_size,
    work_factor="UNet passes a step, relative to the prompt alone (regional prompts)",
    pipelines={"Text2ImgPipeline": Text2ImgPipeline},
    example=example,
    positional=("prompt",),
    api=("prompt", "negative_prompt", *SAMPLING_API, "hires", "hires_model", "speedups", "regions",
         "plan_layout"),
    api_defaults={"hires_model": "", "regions": "[]", "plan_layout": ""},
    help=f"a caption in, images out (--hires: then 4x each; --regions '{REGIONS_EXAMPLE}': a box's own prompt; "
         f"--plan-layout on|off: a learned layout stage plans the boxes a layout model draws)",
)
