"""An x/y plot: one parameter against another, as one labelled grid image, for every task whose
request has the axes' fields (text -> image, unconditional, class -> image).

Each cell is the base request with the x and y values set (one image each; one seed for all, drawn
at random when the base's is -1, unless seed is an axis); every cell is checked before any runs,
and the whole plot must fit the compute budget.

    service.run(XYPlotRequest(Text2ImgRequest(prompt="a red circle"), Axis("guidance_scale", "1, 4, 8"),
                              Axis("seed", "1, 2")))
"""
from __future__ import annotations

import random
from dataclasses import dataclass, replace

from PIL import Image, ImageDraw, ImageFont

from ..catalog import Catalog
from ..limits import Limits
from ..options import SAMPLER_NAMES
from ..prompts import split_top
from ..requests import RequestError
from ..results import Result
from ..tasks import TASKS
from ..validation import Work, validate
from .base import Composition, Option, Plan

AXES = {"seed": int, "steps": int, "guidance_scale": float, "sampler": str, "model": str, "eta": float,
        "class_name": str, "prompt_sr": str}
# what the UI and the grid call each axis (the API and the info keep the names above)
LABELS = {"seed": "seed", "steps": "steps", "guidance_scale": "guidance scale (CFG)", "sampler": "sampler",
          "model": "model", "eta": "eta (DDIM)", "class_name": "class", "prompt_sr": "prompt S/R"}
FIELDS = {"prompt_sr": "prompt"}    # the request field an axis sets, where it is not the axis' own name
PROMPT_SR = "prompt_sr"             # Prompt search/replace: its values are separated by "|", not commas
PLOTTED_TASKS = ("text2img", "unconditional", "class2img")   # one image per cell, from noise


def axes_of(request_type: type) -> list[str]:
    """The axes a task's request has fields for."""
    return [a for a in AXES if FIELDS.get(a, a) in request_type.__dataclass_fields__]


def label(axis: str | None) -> str:
    """An axis as people read it: "guidance scale (CFG)" for guidance_scale."""
    return LABELS.get(axis, str(axis))
MAX_CELLS = 16
MIN_CELL = 128       # px: small images are drawn larger (nearest) so the grid can be read
MARGIN = 24          # px: the title line, then the x values
LEFT = 120           # px: the y values


@dataclass(frozen=True)
class Axis:
    name: str            # one of AXES
    values: str          # comma-separated, e.g. "1, 4, 8" or "DDIM, Euler a"

    def parse(self) -> list:
        if self.name not in AXES:
            raise RequestError(f"x/y plot: unknown axis {str(self.name)[:30]!r}; one of {', '.join(AXES)}")
        sep = "|" if self.name == PROMPT_SR else ","
        items = [v.strip() for v in split_top(str(self.values), sep) if v.strip()]
        if not items:
            raise RequestError(f"x/y plot: give the values of {self.name}, separated by "
                               + ("'|': the text to find in the prompt first" if sep == "|" else "commas"))
        try:
            values = [AXES[self.name](v) for v in items]
        except ValueError:
            raise RequestError(f"x/y plot: {self.name} takes {AXES[self.name].__name__} values, "
                               f"got {str(self.values)[:60]!r}") from None
        if self.name == "sampler" and not set(values) <= set(SAMPLER_NAMES):
            raise RequestError(f"x/y plot: samplers are {', '.join(SAMPLER_NAMES)}")
        return values


@dataclass(frozen=True)
class XYPlotRequest:
    base: object            # a task request (PLOTTED_TASKS): every cell's parameters but the two axes'
    x: Axis
    y: Axis | None = None


def cells(base, x: Axis, y: Axis | None) -> tuple[list, list, list]:
    """The x values, the y values ([None] without a y axis) and the cell requests, row by row."""
    xs, ys = x.parse(), (y.parse() if y is not None else [None])
    if y is not None and y.name == x.name:
        raise RequestError("x/y plot: the two axes must be different parameters")
    for axis in (x, y) if y is not None else (x,):
        if axis.name in AXES and axis.name not in axes_of(type(base)):
            raise RequestError(f"x/y plot: this task has no {axis.name}; its axes: {', '.join(axes_of(type(base)))}")
    if len(xs) * len(ys) > MAX_CELLS:
        raise RequestError(f"x/y plot: {len(xs)} x {len(ys)} cells; at most {MAX_CELLS}")
    seed = base.seed if base.seed is not None and base.seed >= 0 else random.SystemRandom().randrange(2 ** 31)
    out = []
    for vy in ys:
        for vx in xs:
            upd = {"seed": seed, "num_images": 1, **_set(base, x.name, vx, xs),
                   **(_set(base, y.name, vy, ys) if y is not None else {})}
            out.append(replace(base, **upd))
    return xs, ys, out


def _set(base, axis: str, value, values: list) -> dict:
    """The fields a cell's axis value sets. Prompt S/R (as A1111's): the first value is searched for
    in the prompt (and the negative prompt) and replaced by each value in turn."""
    if axis != PROMPT_SR:
        return {axis: value}
    texts = {k: getattr(base, k) for k in ("prompt", "negative_prompt") if isinstance(getattr(base, k, None), str)}
    if not any(values[0] in t for t in texts.values()):
        raise RequestError(f"x/y plot: prompt S/R looks for its first value {values[0][:60]!r} in the prompt "
                           f"{base.prompt[:80]!r}, which does not contain it; start the values with a part of the "
                           f"prompt, e.g. 'red|blue|green' for 'a red circle'")
    return {k: t.replace(values[0], value) for k, t in texts.items()}


def plan(request: XYPlotRequest, catalog: Catalog, limits: Limits) -> Plan:
    """Every cell checked, before any runs; their work together."""
    xs, ys, requests = cells(request.base, request.x, request.y)
    checked = [validate(r, catalog, limits) for r in requests]
    total = sum((c.work.megapixel_steps for c in checked), 0.0)
    return Plan(request, checked, Work(total, f"{len(checked)} cells of {checked[0].work.how}"), data=(xs, ys))


def run(plan: Plan, run_task, callback) -> Result:
    """Run every cell; a Result with one grid image whose info is the first cell's plus the axes."""
    xs, ys = plan.data
    x, y = plan.request.x, plan.request.y
    results = [run_task(cell, callback) for cell in plan.first]
    grid = draw([r.images[0] for r in results], xs, ys, x.name, y.name if y else None)
    # "size" stays a cell's (what Reuse sets); the grid's own is the plot's
    info = {**results[0].per_image[0],
            "xyplot": {"grid_size": f"{grid.width}x{grid.height}", "x_axis": x.name, "x_values": xs,
                       "y_axis": y.name if y else None, "y_values": ys if y else [],
                       "seeds": [r.info["seed"] for r in results]}}
    return Result([grid], [info], info, sum(r.seconds for r in results))


def draw(images: list[Image.Image], xs: list, ys: list, x_name: str, y_name: str | None) -> Image.Image:
    """The images in a grid, row by row: a title line naming the axes, each column's x value above
    it and each row's y value left of it."""
    side = max(MIN_CELL, max(max(im.size) for im in images))
    left = LEFT if y_name else 0
    grid = Image.new("RGB", (left + side * len(xs), 2 * MARGIN + side * len(ys)), "white")
    pen, font = ImageDraw.Draw(grid), ImageFont.load_default(size=14)
    pen.text((4, 4), f"x: {label(x_name)}" + (f"   y: {label(y_name)}" if y_name else ""), fill="black", font=font)
    for i, im in enumerate(images):
        r, c = divmod(i, len(xs))
        cell = im.resize((side, round(side * im.height / im.width)), Image.NEAREST)
        grid.paste(cell, (left + c * side, 2 * MARGIN + r * side))
    for c, vx in enumerate(xs):
        pen.text((left + c * side + side // 2, MARGIN + 6), _fit(vx, side), fill="black", font=font, anchor="mt")
    for r, vy in enumerate(ys if y_name else []):
        pen.text((4, 2 * MARGIN + r * side + side // 2), _fit(vy, left), fill="black", font=font, anchor="lm")
    return grid


def _fit(value, width: int) -> str:
    text = str(value)
    return text if len(text) * 8 <= width else text[:max(3, width // 8 - 1)] + "…"


def build(base, options: dict) -> XYPlotRequest:
    """The plot of `base` along the axes the options name (no y axis: one row)."""
    y_axis = options.get("y_axis")
    y = Axis(y_axis, options.get("y_values") or "") if y_axis and y_axis != "(none)" else None
    return XYPlotRequest(base, Axis(options["x_axis"], options["x_values"]), y)


COMPOSITION = Composition(
    name="xyplot",
    title="X/Y plot: one parameter against another",
    applies=lambda request: isinstance(request, XYPlotRequest),
    plan=plan,
    run=run,
    tasks=tuple(t for t in PLOTTED_TASKS if t in TASKS),
    request=XYPlotRequest,
    options=(Option("x_axis", str, "seed", ", ".join(AXES)), Option("x_values", str, "1, 2, 3", 'e.g. "1, 4, 8"'),
             Option("y_axis", str, "", "empty: one row"), Option("y_values", str, "")),
    build=build,
    api=("prompt", "negative_prompt", "steps", "guidance_scale", "seed", "width", "height", "sampler", "model"),
    help="x/y plot: a text2img parameter against another, one grid (the UI also plots unconditional and "
         "class2img)",
)
