"""Evaluation suites for generators, independent of how images are generated.

A text-to-image generator is any callable
    generate(prompts: list[str], seeds: list[int]) -> list[(64, 64, 3) uint8 arrays]
and a layout-to-image generator any callable
    generate(prompts: list[str], layouts: list[list[{"label", "box"}]], seeds: list[int]) -> same.
Boxes are normalised [x0, y0, x1, y1] like the spec. The CLI (`__main__.py`) builds these
callables from the model stack; tests feed fakes.

Fixed prompt sets: text2img uses `sample_scene(20_000_000 + i, form)` for each caption form,
layout2img uses `sample_scene(20_500_000 + i)`.

FID compares generated images with the GT renders of the same prompts. Its GT-vs-GT floor
for text2img is what a perfect model would score: the same prompts rendered again with
fresh layouts (`relayout`, seeds 30_000_000 + k), at the same sample size. (A perfect
layout2img model reproduces the renders exactly, so its floor is 0.) Both suites also list
a reference: the GT renders under mild degradation (blur 0.7 px + noise 5/255).
"""
from __future__ import annotations

import random
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..data.detector import as_rgb_uint8, degrade
from ..data.judge import judge_caption, judge_layout
from ..data.shapes import CAPTION_FORMS, Scene, draw_objects, place_objects, relation_holds, sample_scene
from ..train.planner import held_out, plan_right
from .features import DEFAULT_DIR, features, fid
from .metrics import caption_summary, layout_summary

TEXT_SEED0 = 20_000_000
LAYOUT_SEED0 = 20_500_000
FLOOR_SEED0 = 30_000_000
FORM_NAMES = {"one": "single object", "two": "two objects", "relation": "relation", "three": "three objects"}

Text2ImgFn = Callable[[list, list], Sequence]
Layout2ImgFn = Callable[[list, list, list], Sequence]


def text2img_prompts(n_per_form: int = 50) -> list[Scene]:
    """The fixed prompt set: each caption form from its own seed range (so forms do not share scenes)."""
    return [sample_scene(TEXT_SEED0 + 100_000 * k + i, form)
            for k, form in enumerate(CAPTION_FORMS) for i in range(n_per_form)]


def layout2img_prompts(n: int = 100) -> list[Scene]:
    return [sample_scene(LAYOUT_SEED0 + i) for i in range(n)]


def to_64(img) -> np.ndarray:
    """Any image (PIL, float or uint8 array, any size) -> (64, 64, 3) uint8."""
    x = as_rgb_uint8(img)
    if x.shape[:2] != (64, 64):
        x = np.asarray(Image.fromarray(x).resize((64, 64), Image.BOX))
    return x


def _generate_all(call, args: list[list], batch: int) -> np.ndarray:
    out = []
    n = len(args[0])
    for i in range(0, n, batch):
        imgs = call(*[a[i:i + batch] for a in args])
        if len(imgs) != len(args[0][i:i + batch]):
            raise ValueError(f"generator returned {len(imgs)} images for {len(args[0][i:i + batch])} prompts")
        out += [to_64(im) for im in imgs]
    return np.stack(out)  # (N, 64, 64, 3)


def relayout(scene: Scene, seed: int, tries: int = 1000) -> np.ndarray:
    """Another valid render of the scene's caption: same objects (and relation), fresh placement."""
    rng = random.Random(seed)
    specs = [(o.color, o.shape) for o in scene.objects]
    for _ in range(tries):
        objs = place_objects(rng, specs)
        if scene.form != "relation" or relation_holds(objs[0], objs[1], scene.relation):
            return draw_objects(objs)
    return scene.image


def _fids(generated: np.ndarray, scenes: list[Scene], classifier, floor: bool = True) -> dict:
    """FID of generated vs GT renders of the same scenes; the perfect-model floor; a degraded-GT reference."""
    gt = np.stack([s.image for s in scenes])
    f_gt = features(gt, classifier)
    degraded = np.stack([degrade(im, seed=k) for k, im in enumerate(gt)])
    out = {"fid": fid(features(generated, classifier), f_gt), "fid_n": len(scenes),
           "fid_degraded_gt": fid(features(degraded, classifier), f_gt)}
    if floor:
        again = np.stack([relayout(s, FLOOR_SEED0 + k) for k, s in enumerate(scenes)])
        out["fid_floor"] = fid(features(again, classifier), f_gt)
    return out


def _grid(rows: list[tuple[str, list[np.ndarray], list[bool | None]]], cols: int = 8, scale: int = 2) -> Image.Image:
    """Rows of (title, images, ok flags); ok adds a green (True) / red (False) border."""
    cell = 64 * scale
    pad = 6
    title_h = 14
    W = cols * (cell + pad) + pad
    H = sum(title_h + cell + pad for _ in rows) + pad
    canvas = Image.new("RGB", (W, H), (235, 235, 235))
    draw = ImageDraw.Draw(canvas)
    y = pad
    for title, imgs, oks in rows:
        draw.text((pad, y), title, fill=(0, 0, 0))
        y += title_h
        for c, (im, ok) in enumerate(zip(imgs[:cols], oks[:cols])):
            x = pad + c * (cell + pad)
            if ok is not None:
                draw.rectangle([x - 3, y - 3, x + cell + 2, y + cell + 2], fill=(40, 170, 60) if ok else (220, 40, 40))
            canvas.paste(Image.fromarray(im).resize((cell, cell), Image.NEAREST), (x, y))
        y += cell + pad
    return canvas


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f} %"


def evaluate_text2img(generate: Text2ImgFn, n_per_form: int = 50, seed: int = 0, batch: int = 16,
                      with_fid: bool = True, classifier=None) -> tuple[str, Image.Image, dict]:
    """Generate the fixed prompt set, judge every image, and compute FID.

    Returns (markdown table, grid image, results dict with per-prompt judgements).
    """
    scenes = text2img_prompts(n_per_form)
    prompts = [s.caption for s in scenes]
    seeds = [seed + k for k in range(len(scenes))]
    images = _generate_all(generate, [prompts, seeds], batch)
    judged = [judge_caption(s, im) for s, im in zip(scenes, images)]
    summary = caption_summary(judged)
    fids = _fids(images, scenes, classifier or _default_classifier()) if with_fid else {}

    lines = ["| caption form | accuracy | correct / n | right count | objects found |", "|---|---|---|---|---|"]
    for form in CAPTION_FORMS + ("all",):
        rs = [j for j in judged if form == "all" or j["form"] == form]
        s = summary[form]
        lines.append(f"| {FORM_NAMES.get(form, 'all')} | {_pct(s['accuracy'])} | {s['correct']} / {s['n']} | "
                     f"{_pct(np.mean([r['count_ok'] for r in rs]))} | "
                     f"{_pct(np.mean([r['objects_found'] for r in rs]))} |")
    if fids:
        lines += ["", "| FID vs GT renders of the same prompts | value |", "|---|---|",
                  f"| generated (n={fids['fid_n']}) | **{fids['fid']:.1f}** |",
                  f"| GT-vs-GT floor: the prompts rendered again with other layouts | {fids['fid_floor']:.1f} |",
                  f"| reference: GT with blur 0.7 px + noise 5/255 | {fids['fid_degraded_gt']:.1f} |"]
    table = "\n".join(lines)

    rows = []
    for form in CAPTION_FORMS:
        idx = [k for k, s in enumerate(scenes) if s.form == form][:8]
        rows.append((f"{FORM_NAMES[form]}: ground truth", [scenes[k].image for k in idx], [None] * len(idx)))
        rows.append((f"{FORM_NAMES[form]}: generated (green = judged correct)",
                     [images[k] for k in idx], [judged[k]["correct"] for k in idx]))
    results = {"summary": summary, **fids, "n_per_form": n_per_form, "seed": seed,
               "per_prompt": [{"prompt": p, "seed": sd, **j} for p, sd, j in zip(prompts, seeds, judged)]}
    return table, _grid(rows), results


def layout_stage_report(plans: list, res: dict) -> str:
    """How the layout stage (compositions/grounded.py) planned the prompts of a text2img eval: per form, the
    share of prompts planned, and of those the share whose plan is right (the objects named, in order, boxes
    2 px apart, the relation holding between the boxes); relation prompts whose combination the planner never
    saw in training (train/planner.HELD_OUT) are also scored apart. Adds `layout_stage` to `res`; "" when
    the eval ran without the stage."""
    if not any(p is not None for p in plans):
        return ""
    scenes = text2img_prompts(res["n_per_form"])
    rows = [{"form": s.form, "planned": p is not None, "held_out": held_out(s), "image_right": bool(j["correct"]),
             "plan_right": p is not None and plan_right(s, [(b["label"], b["box"]) for b in p])}
            for s, p, j in zip(scenes, plans, res["per_prompt"])]
    groups = {**{FORM_NAMES[f]: [r for r in rows if r["form"] == f] for f in CAPTION_FORMS},
              "relation, held-out combinations": [r for r in rows if r["held_out"]]}
    lines = ["| caption form | planned | plan right | image right |", "|---|---|---|---|"]
    stage = {}
    for name, rs in groups.items():
        stage[name] = {k: sum(r[k] for r in rs) for k in ("planned", "plan_right", "image_right")} | {"n": len(rs)}
        lines.append(f"| {name} | " + " | ".join(f"{stage[name][k]} / {len(rs)}"
                                                for k in ("planned", "plan_right", "image_right")) + " |")
    res["layout_stage"] = stage
    return "Layout stage (planned boxes, judged before drawing):\n\n" + "\n".join(lines) + "\n\n"


def evaluate_layout2img(generate: Layout2ImgFn, n: int = 100, seed: int = 0, batch: int = 16,
                        with_fid: bool = True, classifier=None) -> tuple[str, Image.Image, dict]:
    """Generate the fixed layout set, judge boxes, compute FID. Same return shape as evaluate_text2img."""
    scenes = layout2img_prompts(n)
    prompts = [s.caption for s in scenes]
    layouts = [s.boxes for s in scenes]
    seeds = [seed + k for k in range(n)]
    images = _generate_all(generate, [prompts, layouts, seeds], batch)
    judged = [judge_layout(s.boxes, im) for s, im in zip(scenes, images)]
    summary = layout_summary(judged)
    fids = _fids(images, scenes, classifier or _default_classifier(), floor=False) if with_fid else {}

    lines = ["| metric | value |", "|---|---|",
             f"| boxes correct (colour + shape, IoU >= 0.5) | {_pct(summary['box_accuracy'])} of {summary['boxes']} |",
             f"| images with every box correct | {_pct(summary['image_accuracy'])} of {summary['images']} |",
             f"| mean best IoU per box | {summary['mean_iou']:.3f} |"]
    if fids:
        lines += [f"| FID vs GT renders (n={fids['fid_n']}; a perfect model scores 0) | {fids['fid']:.1f} |",
                  f"| reference: FID of GT with blur 0.7 px + noise 5/255 | {fids['fid_degraded_gt']:.1f} |"]
    rows = [("ground truth", [s.image for s in scenes[:8]], [None] * min(8, n)),
            ("generated (green = every box correct)", list(images[:8]), [j["all_correct"] for j in judged[:8]]),
            ("ground truth", [s.image for s in scenes[8:16]], [None] * min(8, max(0, n - 8))),
            ("generated", list(images[8:16]), [j["all_correct"] for j in judged[8:16]])]
    results = {"summary": summary, **fids, "n": n, "seed": seed,
               "per_prompt": [{"prompt": p, "layout": lay, "seed": sd, **j}
                              for p, lay, sd, j in zip(prompts, layouts, seeds, judged)]}
    return "\n".join(lines), _grid([r for r in rows if r[1]]), results


def _default_classifier():
    return DEFAULT_DIR


VALIDATION_SEED0 = 23_000_000   # prompts for tuning settings; disjoint from the eval's TEXT_SEED0 set


def guidance_sweep(generate: Callable, guidances: Sequence[float], n_per_form: int = 24) -> tuple[str, dict]:
    """Caption accuracy per caption form for each guidance scale, on validation prompts (never the
    eval's): generate(prompt, seed, guidance) -> (64, 64, 3) uint8."""
    res = {}
    for g in guidances:
        row = {}
        for k, form in enumerate(CAPTION_FORMS):
            scenes = [sample_scene(VALIDATION_SEED0 + 100_000 * k + i, form) for i in range(n_per_form)]
            row[form] = float(np.mean([judge_caption(s, generate(s.caption, i, g))["correct"]
                                       for i, s in enumerate(scenes)]))
        res[str(g)] = row
    lines = ["| guidance | " + " | ".join(FORM_NAMES[f] for f in CAPTION_FORMS) + " |",
             "|---|" + "---|" * len(CAPTION_FORMS)]
    lines += [f"| {g} | " + " | ".join(_pct(r[f]) for f in CAPTION_FORMS) + " |" for g, r in res.items()]
    return "\n".join(lines), {"n_per_form": n_per_form, "accuracy": res}
