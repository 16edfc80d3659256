"""Class-conditional synthesis (paper §4.1): ImageNet classes (the paper's cin256 models) or
Shapes World object kinds (the built-in model) in, images out. Several classes in one batch:
image i is of class i mod (number of classes), each with its own seed."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .. import zoo
from ..data.object_kinds import CLASS_NAMES
from ..pipelines.class2img import ClassConditionalPipeline
from ..requests import RequestError, check_size
from .base import Task
from .unconditional import MODEL_OWN, check_eta

MAX_CLASS_TEXT = 4000                    # characters of class names in one request


@dataclass(kw_only=True)
class Class2ImgRequest:
    class_name: str | list = ""          # "goldfish", "1; 207", [1, "tabby cat"]: one per image, cycling
    steps: int | None = None
    guidance_scale: float | None = None  # classifier-free guidance, for models trained with a null class
    seed: int = -1
    num_images: int = 1
    width: int | None = None
    height: int | None = None
    sampler: str | None = None
    model: str | None = None
    eta: float | None = None             # DDIM's eta; None: the model's
    speedups: str | list[str] | None = None   # as Sampling's: None or "": the model's own


def shapes_world_classes() -> tuple[str, ...]:
    """The built-in model's classes: every colour (PALETTE order) with every shape (SHAPES order)."""
    return CLASS_NAMES


CLASS_LISTS = {"imagenet": zoo.imagenet_classes, "shapes-world": shapes_world_classes}


def class_names(entry) -> tuple[str, ...]:
    """The names a model's class indices stand for; () when its classes are given by index only."""
    return CLASS_LISTS[entry.classes]() if entry.classes else ()


def _index(token, names: tuple[str, ...]) -> int:
    """A class index from an index or a name: the whole label ("tabby, tabby cat"), or one of its
    comma-separated synonyms ("tabby cat"), case-insensitive."""
    if isinstance(token, bool):
        raise RequestError("a class must be a name or an index")
    if isinstance(token, int) or (isinstance(token, str) and token.strip().isdigit()):
        return int(token)
    want = str(token).strip().lower()
    for i, label in enumerate(names):
        if want == label.lower() or want in (s.strip().lower() for s in label.split(",")):
            return i
    words = [n for n in names if want and re.search(rf"\b{re.escape(want)}\b", n.lower())]
    close = (words or [n for n in names if want and want in n.lower()])[:5]
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    known = f" (one of {len(names)} names, or an index)" if names else " (this model takes class indices)"
    raise RequestError(f"unknown class {str(token)[:60]!r}{known}{hint}")


def parse_classes(raw, names: tuple[str, ...]) -> list[int]:
    """Class indices from one name or index, several separated by ';', or a list of them."""
    if isinstance(raw, str) and raw.strip().startswith("["):   # the JSON list an info records
        try:
            raw = json.loads(raw)
        except ValueError:
            raise RequestError("class_name: not a valid JSON list of names or indices") from None
    if isinstance(raw, str):
        if len(raw) > MAX_CLASS_TEXT:
            raise RequestError(f"class_name is {len(raw)} characters long; the limit is {MAX_CLASS_TEXT}")
        raw = [t for t in raw.split(";") if t.strip()]
    elif isinstance(raw, (int, float)) and not isinstance(raw, bool):
        raw = [int(raw)]
    if not isinstance(raw, (list, tuple)) or not raw:
        raise RequestError("give a class: a name such as 'goldfish', an index such as 1, or several separated "
                           "by ';'")
    return [_index(t, names) for t in raw]


def check(req: Class2ImgRequest, entry, limits) -> dict:
    names = class_names(entry)
    labels = parse_classes(req.class_name, names)
    if names and not all(0 <= c < len(names) for c in labels):
        bad = next(c for c in labels if not 0 <= c < len(names))
        raise RequestError(f"class index {bad} is not one of this model's classes 0-{len(names) - 1}")
    if len(labels) > req.num_images:
        raise RequestError(f"{len(labels)} classes given for {req.num_images} image"
                           f"{'s' * (req.num_images > 1)}: ask for at least {len(labels)} images (one per class)")
    if req.guidance_scale > 1 and not entry.guided:
        raise RequestError(f"{entry.name} was trained without a null class, so classifier-free guidance cannot "
                           f"run: set guidance to 1")
    # checked: each class by its full label where the model's classes have names, else its index
    classes = [names[c] for c in labels] if names else labels
    return {"class_name": classes, "eta": check_eta(req, entry), **check_size(req, entry, limits)}


def class_of(req: Class2ImgRequest, i: int):
    """Image i's class (a checked request's label or index): the classes in turn."""
    return req.class_name[i % len(req.class_name)]


def call(pipe, req: Class2ImgRequest, seeds, callback):
    labels = [pipe.class_index(class_of(req, i)) for i in range(len(seeds))]
    return pipe(class_labels=labels, height=req.height, width=req.width, num_inference_steps=req.steps,
                guidance_scale=req.guidance_scale, seeds=seeds, sampler=req.sampler, eta=req.eta, callback=callback)


def info(req: Class2ImgRequest) -> dict:
    return {"class_name": "; ".join(str(c) for c in req.class_name), "guidance_scale": req.guidance_scale,
            "eta": req.eta}


def example(side: int) -> dict:
    return {"class_name": "red circle", "width": side, "height": side}


TASK = Task(
    name="class2img",
    title="Class → Image",
    order=6,
    request=Class2ImgRequest,
    check=check,
    call=call,
    info=info,
    image_info=lambda req, i: {"class_name": str(class_of(req, i))},
    output_size=lambda r: (r.width, r.height, 1),
    api_defaults=MODEL_OWN,
    pipelines={"ClassConditionalPipeline": ClassConditionalPipeline},
    example=example,
    positional=("class_name",),
    api=("class_name", "steps", "guidance_scale", "seed", "num_images", "width", "height", "sampler", "model", "eta",
         "speedups"),
    help="ImageNet classes (the paper's cin256 models) or Shapes World object kinds in, images out; "
         "several classes separated by ';'",
)
