"""Evaluation of semantic synthesis (§4.3.2) on Shapes World maps: does the image draw what the
map paints, where it paints it, and at canvases larger than the training size?

    python -m ldm_core.eval semantic [--model shapes-semantic --n 96 --steps 25 --size 64 128 256]

Maps are Shapes World scenes' label maps (`data/label_maps.py`, held-out seeds from
SEMANTIC_SEED0); at 128² and 256² scenes are tiled (2x2, 4x4), so objects keep the world's size of
12-28 px while the canvas grows. A painted object is *matched* when the detector finds an object of
its class (colour and shape) whose box overlaps the painted one with IoU >= 0.5 (each detection
used once). Reported: the share of painted objects matched (region agreement), the share of
detections that match a painted object (precision), and at 64² FID against renders of the same
scenes (`features.py`).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ..data.detector import box_iou, detect
from ..data.images import save_grid
from ..data.label_maps import colorize, tiled_scene
from ..data.shapes import CANVAS, ShapeObject, draw_objects
from ..stack import ModelStack
from ..tasks.semantic2img import Semantic2ImgRequest
from .features import features, fid

SEMANTIC_SEED0 = 33_000_000     # held-out maps (training scenes are 0..N-1)
MATCH_IOU = 0.5
MIN_FID_N = 256                 # FID over fewer images is dominated by its estimation error


def painted_boxes(objects: list[ShapeObject], offsets: list[tuple[int, int]]) -> list[tuple[str, tuple]]:
    return [(o.label, (o.x + ox, o.y + oy, o.x + ox + o.size, o.y + oy + o.size))
            for o, (ox, oy) in zip(objects, offsets)]


def agreement(image: np.ndarray, painted: list[tuple[str, tuple]]) -> tuple[int, int, int]:
    """(painted objects matched, painted objects, detections) for one image."""
    dets = detect(image)
    pairs = sorted(((box_iou(box, d.box_px), i, j) for i, (label, box) in enumerate(painted)
                    for j, d in enumerate(dets) if d.label == label), reverse=True)
    used_p, used_d = set(), set()
    for iou, i, j in pairs:
        if iou >= MATCH_IOU and i not in used_p and j not in used_d:
            used_p.add(i)
            used_d.add(j)
    return len(used_p), len(painted), len(dets)


def eval_maps(n: int, size: int, seed0: int = SEMANTIC_SEED0) -> list[tuple[list, list, np.ndarray]]:
    """n held-out maps of size x size (a multiple of 64): (objects, offsets, labels) each."""
    if size % CANVAS:
        raise ValueError(f"size must be a multiple of {CANVAS}")
    t = size // CANVAS
    return [tiled_scene(seed0 + i * t * t, t, t) for i in range(n)]


def region_scores(images, maps) -> dict:
    matched = painted = found = 0
    for im, (objects, offsets, _) in zip(images, maps):
        m, p, d = agreement(np.asarray(im), painted_boxes(objects, offsets))
        matched, painted, found = matched + m, painted + p, found + d
    return {"region_agreement": matched / max(painted, 1), "precision": matched / max(found, 1),
            "painted": painted, "detected": found}


def renders(maps) -> np.ndarray:
    """The scenes the maps were made from, drawn (64² maps only)."""
    return np.stack([draw_objects(objects) for objects, _, _ in maps])


def _fid(generate, n: int, seed: int) -> dict:
    """FID at 64² against renders of the same n maps' scenes, and renders of other scenes against them."""
    maps = eval_maps(n, CANVAS)
    images = np.stack([generate(Image.fromarray(colorize(labels)), seed + i) for i, (_, _, labels) in enumerate(maps)])
    ref = features(renders(maps))
    return {"fid": fid(features(images), ref), "fid_n": n,
            "reference_fid": fid(features(renders(eval_maps(n, CANVAS, SEMANTIC_SEED0 + 10_000_000))), ref)}


def evaluate(generate, sizes=(64, 128, 256), n: int = 48, seed: int = 0, fid_n: int = 0) -> tuple[str, dict, dict]:
    """generate(label map PIL, seed) -> uint8 image, at each size on held-out maps (seeds seed..);
    with fid_n (>= MIN_FID_N) also FID at 64² over fid_n maps. Returns (markdown table, results,
    {size: first images})."""
    res, shown = {"n": n, "seeds": f"{seed}..{seed + n - 1}", "sizes": {}}, {}
    for size in sizes:
        maps = eval_maps(n, size)
        t0 = time.monotonic()
        images = [generate(Image.fromarray(colorize(labels)), seed + i) for i, (_, _, labels) in enumerate(maps)]
        r = {**region_scores(images, maps), "seconds_per_image": (time.monotonic() - t0) / n}
        if size == CANVAS and fid_n >= MIN_FID_N:
            r.update(_fid(generate, fid_n, seed))
        res["sizes"][size], shown[size] = r, images[:8]
    lines = ["| canvas | painted objects | region agreement | precision | FID vs renders (64² only) | s / image |",
             "|---|---|---|---|---|---|"]
    for size, r in res["sizes"].items():
        f = f"{r['fid']:.1f} (n {r['fid_n']}; renders vs renders {r['reference_fid']:.1f})" if "fid" in r else "—"
        lines.append(f"| {size}² | {r['painted']} | {100 * r['region_agreement']:.1f} % | {100 * r['precision']:.1f} % "
                     f"| {f} | {r['seconds_per_image']:.2f} |")
    return "\n".join(lines), res, shown


def add_arguments(p) -> None:
    """`python -m ldm_core.eval semantic`'s options."""
    p.add_argument("--model", default="shapes-semantic", help="catalog model name")
    p.add_argument("--catalog", default=None, help="catalog file (default: models/catalog.toml)")
    p.add_argument("--n", type=int, default=48, help="maps per size")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--size", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--fid-n", type=int, default=480, help="maps for FID at 64² (0: no FID)")


def task(a) -> None:
    """The semantic model through the studio's own request path, at each size."""
    stack = ModelStack.from_catalog(a.catalog)

    def generate(label_map, seed):
        req = Semantic2ImgRequest(label_map=label_map, seed=seed, steps=a.steps, model=a.model)
        return np.asarray(stack.run(req).images[0].convert("RGB"))

    table, res, shown = evaluate(generate, a.size, a.n, fid_n=a.fid_n)
    out = Path(a.out or f"outputs/eval/semantic-{a.model}")
    out.mkdir(parents=True, exist_ok=True)
    for size, images in shown.items():
        save_grid(np.stack(images), out / f"grid-{size}.png", cols=4, scale=max(1, 256 // size))
    (out / "report.md").write_text(f"## semantic2img: {a.model}, {a.steps} steps\n\n{table}\n")
    (out / "results.json").write_text(json.dumps(res, indent=2))
    print(table)
