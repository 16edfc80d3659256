"""Layout -> image (paper §4.3): labelled boxes (and an optional caption) in, images out."""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..limits import DEFAULT_LIMITS, Limits
from ..pipelines.layout2img import GligenLayoutPipeline, Layout2ImgPipeline
from ..pipelines.layout_paper import PaperLayoutPipeline
from ..requests import SAMPLING_API, RequestError, Sampling, check_box, check_size
from .base import Task


@dataclass(frozen=True)
class Box:
    label: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in [0, 1]


@dataclass(kw_only=True)
class Layout2ImgRequest(Sampling):
    prompt: str = ""
    boxes: list[Box] | str = field(default_factory=list)  # a JSON string is parsed by validate()
    negative_prompt: str = ""
    hires: bool = False                   # then 4x super-resolution of each image (ldm_core/compositions/hires.py)
    hires_model: str | None = None        # its super-resolution model; None: the catalog's default
    # larger than the model's training size: drawn at refine_from first, enlarged, refined at the requested size
    refine_from: int | None = None        # None: the model's (catalog `refine_above`); 0: the UNet on the larger latent
    refine_strength: float | None = None  # how far the enlarged image is noised and redrawn; None: the model's


def parse_boxes(raw, limits: Limits = DEFAULT_LIMITS) -> list[Box]:
    """Boxes from JSON text or a list of {"label": str, "box": [x0, y0, x1, y1]} (normalised)."""
    if isinstance(raw, str):
        if len(raw) > limits.max_boxes_json_chars:
            raise RequestError(f"boxes JSON is too long ({len(raw)} characters; limit {limits.max_boxes_json_chars})")
        try:
            raw = json.loads(raw) if raw.strip() else []
        except json.JSONDecodeError as e:
            raise RequestError(f"boxes is not valid JSON: {e.msg} at character {e.pos}") from None
        except RecursionError:
            raise RequestError("boxes JSON is nested too deeply: give a flat list of boxes") from None
        except ValueError:   # e.g. an integer of more digits than Python converts
            raise RequestError("boxes JSON holds a number too long to read") from None
    if not isinstance(raw, list):
        raise RequestError('boxes must be a JSON list like [{"label": "red circle", "box": [0.1, 0.1, 0.4, 0.4]}]')
    if len(raw) > limits.max_boxes:
        raise RequestError(f"{len(raw)} boxes given; at most {limits.max_boxes} are supported")
    boxes = []
    for i, b in enumerate(raw, 1):
        if isinstance(b, Box):
            label, coords = b.label, b.box
        elif isinstance(b, dict) and "label" in b and "box" in b:
            label, coords = b["label"], b["box"]
        else:
            raise RequestError(f'box {i} must be an object with "label" and "box" keys')
        if not isinstance(label, str) or not label.strip() or len(label) > 60:
            raise RequestError(f"box {i}: label must be non-empty text of at most 60 characters")
        boxes.append(Box(label.strip(), check_box(f"box {i}", coords)))
    return boxes


PIPELINES = {"Layout2ImgPipeline": Layout2ImgPipeline, "GligenLayoutPipeline": GligenLayoutPipeline,
             "PaperLayoutPipeline": PaperLayoutPipeline}


def label_names(entry) -> tuple[str, ...]:
    """The class names a model's boxes must carry (the paper's model: 340 OpenImages classes); () when
    its labels are free text or words of its own (checked by its pipeline)."""
    cls = PIPELINES.get(entry.pipeline)
    return cls.class_names() if hasattr(cls, "class_names") else ()


def takes_caption(entry) -> bool:
    """Whether the model reads a caption (and a negative prompt) besides the boxes."""
    return getattr(PIPELINES.get(entry.pipeline), "takes_caption", True)


def label_error(label: str, entry) -> str | None:
    """Why the model cannot draw a box labelled `label`, with close names (None: it can, or its labels are
    free text or words of its own, checked by its pipeline)."""
    cls = PIPELINES.get(entry.pipeline)
    try:
        if hasattr(cls, "class_of"):
            cls.class_of(label)
    except ValueError as e:
        return str(e)
    return None


def known_labels(boxes: list[Box], entry) -> list[Box]:
    """The boxes with each label as the model's class name (any case; a merged class as the one it became);
    a label the model does not know is refused with close names."""
    cls = PIPELINES.get(entry.pipeline)
    if not hasattr(cls, "class_of"):
        return boxes
    for i, b in enumerate(boxes, 1):
        why = label_error(b.label, entry)
        if why:
            raise RequestError(f"box {i}: {why}")
    return [Box(cls.class_of(b.label), b.box) for b in boxes]


def check(req: Layout2ImgRequest, entry, limits) -> dict:
    boxes = parse_boxes(req.boxes, limits)
    cls = PIPELINES.get(entry.pipeline)
    if not takes_caption(entry):
        if req.prompt or req.negative_prompt:
            raise RequestError(f"{entry.name} reads boxes and classes only, no caption or negative prompt: "
                               f"leave them empty")
        if not boxes:
            raise RequestError(f"give at least one box: {entry.name} draws from boxes alone")
    if not boxes and not req.prompt:
        raise RequestError("give at least one box (or a caption)")
    if req.guidance_scale != 1 and not (entry.guided and getattr(cls, "guided", True)):
        raise RequestError(f"{entry.name} was trained without a null layout, so classifier-free guidance cannot "
                           f"run: set guidance to 1")
    return {"boxes": known_labels(boxes, entry), **check_size(req, entry, limits), **check_refine(req, entry)}


def check_refine(req: Layout2ImgRequest, entry) -> dict:
    """refine_from and refine_strength, the model's own when unset (docs/evaluation.md, larger canvases)."""
    side = entry.refine_above if req.refine_from is None else req.refine_from
    strength = entry.refine_strength if req.refine_strength is None else req.refine_strength
    if isinstance(side, bool) or not isinstance(side, int) or side < 0 or side % 8:
        raise RequestError(f"refine_from must be 0 (off) or a positive multiple of 8, got {side!r}")
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
        raise RequestError(f"refine_strength must be a number from 0 to 1, got {strength!r}")
    if side and entry.pipeline != "Layout2ImgPipeline":
        raise RequestError(f"{entry.name} cannot draw small and refine (refine_from): set it to 0")
    return {"refine_from": side, "refine_strength": float(strength)}


def call(pipe, req: Layout2ImgRequest, seeds, callback):
    return pipe(prompt=req.prompt, boxes=[(b.label, b.box) for b in req.boxes], negative_prompt=req.negative_prompt,
                height=req.height, width=req.width, num_inference_steps=req.steps,
                guidance_scale=req.guidance_scale, seeds=seeds, sampler=req.sampler, callback=callback,
                **refined(req))


def refined(req: Layout2ImgRequest) -> dict:
    """The hires-fix arguments of a canvas larger than refine_from ({} when it is not refined)."""
    if not req.refine_from or max(req.width, req.height) <= req.refine_from:
        return {}
    return {"refine_from": req.refine_from, "refine_strength": req.refine_strength}


def info(req: Layout2ImgRequest) -> dict:
    return {"prompt": req.prompt, "negative_prompt": req.negative_prompt, "guidance_scale": req.guidance_scale,
            "boxes": [{"label": b.label, "box": list(b.box)} for b in req.boxes], **refined(req)}


def example(side: int) -> dict:
    boxes = [{"label": "red circle", "box": [0.1, 0.3, 0.45, 0.65]},
             {"label": "blue square", "box": [0.55, 0.3, 0.9, 0.65]}]
    return {"boxes": json.dumps(boxes), "width": side, "height": side}


TASK = Task(
    name="layout2img",
    title="Layout → Image",
    order=1,
    request=Layout2ImgRequest,
    check=check,
    call=call,
    info=info,
    output_size=lambda r: (r.width, r.height, 1),
    pipelines=PIPELINES,
    example=example,
    api=("prompt", "boxes", "negative_prompt", *SAMPLING_API, "hires", "hires_model", "speedups"),
    # sampling parameters left unset: the chosen model's own (the paper's model: 256², 100 DDIM steps, guidance 1)
    api_defaults={"boxes": "[]", "hires_model": "", "sampler": "",
                  **{f: None for f in ("steps", "guidance_scale", "width", "height")}},
    help='boxes as JSON: [{"label": "red circle", "box": [x0, y0, x1, y1]}], normalised to [0, 1]',
)
