"""The rectangle-mask inpainting check (issue 31): how a user repaints one object with the brush.

A two-object scene (`sample_scene(21_300_000 + i, "two")`); one object (the first and the second in
turn) masked by its box padded `pad` px, the masked area filled (`fill`: white as a brush leaves it,
the image as it was, noise, mid grey), the scene's caption as the prompt, sent as the Inpainting tab
sends it (an `InpaintRequest` through `ModelStack.run`: the tab's `mask_blur`, width/height left at
the input's own size, the model's own steps and guidance unless given). The masked object is right
when a detection has its colour and shape at IoU >= `iou` with its box; the project's caption judge
(every object right, nothing extra) is reported beside it. Rates with a 95 % Wilson interval,
stratified by object size and position.

Variations (one at a time): `fill`, `pad`, `shape` (rect or ellipse), `mask_blur`, `size` (the
width/height asked for; 0 = the input's own), `wording` (caption, object alone, the other object
order, no articles, a sentence with a capital and a full stop), `iou`, and `scale` (the scene drawn
at `scale` x 64 px: objects sized and placed outside the 64 px training distribution).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ldm_core.stack import ModelStack
from ldm_core.tasks import TASKS

from ..data.detector import box_iou, detect
from ..data.judge import judge_caption
from ..data.shapes import CANVAS, sample_scene
from .evaluate import _grid

RECT_SEED0 = 21_300_000
FILLS = ("white", "image", "noise", "grey")
SHAPES = ("rect", "ellipse")
WORDINGS = ("caption", "object", "swapped", "bare", "sentence")


@dataclass
class RectCheck:
    n: int = 100
    fill: str = "white"
    pad: int = 3
    shape: str = "rect"
    mask_blur: float | None = None     # None: the request's default (the tab's)
    size: int = 0                      # width = height asked for; 0: the input's own size
    wording: str = "caption"
    iou: float = 0.5
    scale: int = 1                     # the scene enlarged (nearest) to scale x 64 px
    steps: int | None = 25
    guidance: float | None = None      # None: the model's own
    seed: int = 0

    def __post_init__(self):
        for name, value, allowed in (("fill", self.fill, FILLS), ("shape", self.shape, SHAPES),
                                     ("wording", self.wording, WORDINGS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if not 0 < self.iou <= 1:
            raise ValueError(f"iou must be in (0, 1], got {self.iou}")
        if self.scale < 1 or self.pad < 0 or self.n < 1:
            raise ValueError(f"n >= 1, pad >= 0 and scale >= 1 are needed, got n={self.n} pad={self.pad} "
                             f"scale={self.scale}")


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95 % Wilson score interval of k successes in n."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def rect_mask(box: tuple[int, int, int, int], pad: int, shape: str, side: int) -> np.ndarray:
    """(side, side) bool: the box (exclusive right/bottom edges) grown by `pad` px, as a rectangle or
    the ellipse inscribed in that rectangle."""
    x0, y0, x1, y1 = box
    m = Image.new("L", (side, side), 0)
    r = [x0 - pad, y0 - pad, x1 + pad - 1, y1 + pad - 1]
    (ImageDraw.Draw(m).rectangle if shape == "rect" else ImageDraw.Draw(m).ellipse)(r, fill=255)
    return np.asarray(m) > 127


def fill_hole(image: np.ndarray, m: np.ndarray, fill: str, rng: np.random.Generator) -> np.ndarray:
    """The input image with the masked pixels painted over (`FILLS`)."""
    out = image.copy()
    if fill == "white":
        out[m] = 255
    elif fill == "grey":
        out[m] = 127
    elif fill == "noise":
        out[m] = rng.integers(0, 256, (int(m.sum()), 3), dtype=np.uint8)
    return out


def prompt_for(scene, j: int, wording: str) -> str:
    objs = scene.objects
    if wording == "caption":
        return scene.caption
    if wording == "object":
        return f"a {objs[j].label}"
    if wording == "sentence":                           # "A red circle and a blue square."
        return scene.caption[0].upper() + scene.caption[1:] + "."
    if wording == "swapped":
        return f"a {objs[1].label} and a {objs[0].label}"
    return " and ".join(o.label for o in objs)        # bare: "red circle and blue square"


def strata(o, j: int) -> dict:
    x0, y0, x1, y1 = o.box_px
    edge = min(x0, y0, CANVAS - x1, CANVAS - y1)
    return {"object size": "small (12-17 px)" if o.size < 18 else "medium (18-22 px)" if o.size < 23
            else "large (23-28 px)",
            "distance to the border": "0-2 px" if edge < 3 else "3-9 px" if edge < 10 else ">= 10 px",
            "masked object": ("first", "second")[j]}


def make_case(cfg: RectCheck, i: int) -> dict:
    s = sample_scene(RECT_SEED0 + i, "two")
    j = i % 2
    k = cfg.scale
    img = np.kron(s.image, np.ones((k, k, 1), np.uint8)) if k > 1 else s.image
    box = tuple(v * k for v in s.objects[j].box_px)
    m = rect_mask(box, cfg.pad * k, cfg.shape, CANVAS * k)
    shown = fill_hole(img, m, cfg.fill, np.random.default_rng(RECT_SEED0 + i))
    return {"scene": s, "index": j, "mask": m, "image": shown, "prompt": prompt_for(s, j, cfg.wording),
            "seed": cfg.seed + i, "strata": strata(s.objects[j], j)}


def judge_case(case: dict, out: np.ndarray, min_iou: float) -> dict:
    """The masked object right (colour, shape, IoU >= min_iou), and the caption judge on the whole image,
    both at 64 px (a larger output is box-filtered down)."""
    if out.shape[0] != CANVAS:
        out = np.asarray(Image.fromarray(out).resize((CANVAS, CANVAS), Image.BOX))
    o = case["scene"].objects[case["index"]]
    dets = detect(out)
    ious = [box_iou(o.box_px, d.box_px) for d in dets if d.label == o.label]
    return {"ok": bool(ious and max(ious) >= min_iou), "best_iou": max(ious, default=0.0),
            "caption_judge": bool(judge_caption(case["scene"], out, dets)["correct"]),
            "detected": [d.label for d in dets]}


def _rate(flags: list[bool]) -> dict:
    k, n = int(sum(flags)), len(flags)
    lo, hi = wilson(k, n)
    return {"rate": k / n if n else 0.0, "k": k, "n": n, "ci95": [lo, hi]}


def evaluate_rect(inpaint, cfg: RectCheck) -> tuple[str, Image.Image | None, dict]:
    """inpaint(case, cfg) -> (H, W, 3) uint8; the report table, a grid of failures, the results."""
    rows, fails = [], []
    for i in range(cfg.n):
        c = make_case(cfg, i)
        out = inpaint(c, cfg)
        r = judge_case(c, out, cfg.iou)
        rows.append({**c["strata"], **r})
        if not r["ok"] and len(fails) < 16:
            fails.append((c["image"], out))
    res = {"config": asdict(cfg), "object_right": _rate([r["ok"] for r in rows]),
           "caption_judge": _rate([r["caption_judge"] for r in rows]),
           "best_iou": [r["best_iou"] for r in rows], "strata": {}}
    lines = [f"| rectangle check: {describe(cfg)} | rate | 95 % CI | n |", "|---|---|---|---|",
             _row("**masked object right**", res["object_right"]), _row("caption judge (whole scene)",
                                                                       res["caption_judge"])]
    for key in ("object size", "distance to the border", "masked object"):
        groups: dict[str, list[bool]] = {}
        for r in rows:
            groups.setdefault(r[key], []).append(r["ok"])
        res["strata"][key] = {g: _rate(v) for g, v in sorted(groups.items())}
        lines += [_row(f"{key}: {g}", v) for g, v in res["strata"][key].items()]
    return "\n".join(lines), failure_grid(fails), res


def failure_grid(fails: list) -> Image.Image | None:
    """Up to 16 failures, 8 a row: the input (hole filled) above what came back."""
    rows = []
    for k in range(0, len(fails), 8):
        part = fails[k:k + 8]
        rows += [("input (failures)", [f[0] for f in part], [None] * len(part)),
                 ("result", [f[1] for f in part], [False] * len(part))]
    return _grid(rows) if rows else None


IOU_SWEEP = (0.1, 0.3, 0.7, 0.9)


def iou_sweep(res: dict, thresholds) -> dict:
    """The masked-object rate at other IoU thresholds, from the best IoU each result reached."""
    return {t: _rate([b >= t for b in res["best_iou"]]) for t in thresholds}


def _row(name: str, r: dict) -> str:
    return f"| {name} | {100 * r['rate']:.1f} % | {100 * r['ci95'][0]:.0f}–{100 * r['ci95'][1]:.0f} % | {r['n']} |"


def describe(cfg: RectCheck) -> str:
    blur = "default" if cfg.mask_blur is None else f"{cfg.mask_blur:g}"
    return (f"fill {cfg.fill}, pad {cfg.pad}, {cfg.shape}, mask blur {blur}, size {cfg.size or 'own'}, "
            f"{cfg.wording}, IoU {cfg.iou:g}, scale {cfg.scale}")


def variants(cfg: RectCheck, names: list[str]) -> list[RectCheck]:
    """The base check, then each one-thing-changed variant named `key=value` (e.g. "fill=image")."""
    out = [cfg]
    for spec in names:
        key, _, value = spec.partition("=")
        if key not in RectCheck.__dataclass_fields__ or not value:
            raise ValueError(f"a variant is field=value with a field of RectCheck, got {spec!r}")
        kind = type(getattr(cfg, key)) if getattr(cfg, key) is not None else float
        out.append(replace(cfg, **{key: kind(value)}))
    return out


def request_inpaint(stack, model: str):
    """inpaint(case, cfg) through the request path the tab uses: an InpaintRequest on `stack`."""
    request = TASKS["inpaint"].request     # the request type the tab and the API build

    def inpaint(case: dict, cfg: RectCheck) -> np.ndarray:
        kw = {"mask_blur": cfg.mask_blur} if cfg.mask_blur is not None else {}
        if cfg.size:
            kw.update(width=cfg.size, height=cfg.size)
        req = request(image=Image.fromarray(case["image"]), mask=Image.fromarray((case["mask"] * 255).astype(np.uint8)),
                      prompt=case["prompt"], seed=case["seed"], steps=cfg.steps, guidance_scale=cfg.guidance,
                      model=model, **kw)
        return np.asarray(stack.run(req).images[0].convert("RGB"))
    return inpaint


# ------------------------------------------------------------------ command line

def add_arguments(p) -> None:
    p.add_argument("--model", default="shapes-inpaint", help="catalog model name")
    p.add_argument("--catalog", default=None, help="catalog file (default: models/catalog.toml)")
    p.add_argument("--n", type=int, default=100, help="scenes (the same for every variant)")
    p.add_argument("--fill", default="white", choices=FILLS, help="what the masked area holds in the input")
    p.add_argument("--pad", type=int, default=3, help="px around the object's box")
    p.add_argument("--shape", default="rect", choices=SHAPES)
    p.add_argument("--blur", type=float, default=None, help="mask_blur (default: the request's, as the tab)")
    p.add_argument("--size", type=int, default=0, help="width = height asked for (0: the input's own)")
    p.add_argument("--wording", default="caption", choices=WORDINGS)
    p.add_argument("--iou", type=float, default=0.5, help="IoU the masked object's detection needs")
    p.add_argument("--scale", type=int, default=1, help="scene drawn at scale x 64 px")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=None, help="default: the model's own")
    p.add_argument("--seed", type=int, default=0, help="first generation seed")
    p.add_argument("--vary", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="also run the check with one field changed, each in turn: fill=image pad=0 mask_blur=0 ...")


def task(a) -> None:
    base = RectCheck(n=a.n, fill=a.fill, pad=a.pad, shape=a.shape, mask_blur=a.blur, size=a.size,
                     wording=a.wording, iou=a.iou, scale=a.scale, steps=a.steps, guidance=a.guidance, seed=a.seed)
    inpaint = request_inpaint(ModelStack.from_catalog(a.catalog), a.model)
    out = Path(a.out or f"outputs/eval/inpaint-rect-{a.model}")
    out.mkdir(parents=True, exist_ok=True)
    summary = [f"## rectangle-mask inpainting check: {a.model}\n", "| variant | masked object right | 95 % CI | "
               "caption judge | n |", "|---|---|---|---|---|"]
    results, details = [], []
    for k, cfg in enumerate(variants(base, a.vary)):
        table, grid, res = evaluate_rect(inpaint, cfg)
        r, c = res["object_right"], res["caption_judge"]
        name = "base: " + describe(cfg) if k == 0 else a.vary[k - 1]
        shown = len(summary)
        summary.append(f"| {name} | **{100 * r['rate']:.1f} %** | {100 * r['ci95'][0]:.0f}–"
                       f"{100 * r['ci95'][1]:.0f} % | {100 * c['rate']:.1f} % | {r['n']} |")
        if k == 0:   # the detector's IoU threshold needs no new images: the same results, judged again
            summary += [f"| iou={t:g} (same images) | **{100 * r['rate']:.1f} %** | {100 * r['ci95'][0]:.0f}–"
                        f"{100 * r['ci95'][1]:.0f} % | | {r['n']} |" for t, r in iou_sweep(res, IOU_SWEEP).items()]
        results.append({"variant": name, **res})
        details.append(f"### {name}\n\n{table}")
        if grid is not None:
            grid.save(out / f"failures-{k}.png")
        print("\n".join(summary[shown:]), flush=True)
    report = "\n".join(summary) + "\n\n" + "\n\n".join(details)
    (out / "report.md").write_text(report + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(report, f"\nwritten to {out}/", sep="\n")
