"""Layout-to-image beyond the training size (paper §4.3.2: spatially conditioned models sampled
convolutionally on larger canvases): `python -m ldm_core.eval layout2img --model NAME --size 64 128 256`.

The same layouts (normalised boxes) and seeds at every size. How larger outputs are judged: each
image is downsampled to 64×64 with a box filter (area average, `evaluate.to_64`) and judged by the
64×64 detector exactly as at the native size. The box filter is the renderer's own anti-aliasing
(`shapes.draw_objects` draws 4× larger and box-reduces), so a perfect 128² or 256² drawing of a
layout reduces to exactly its 64² ground truth: the judge is neither stricter nor kinder at any size.
(Judging at native resolution would need the detector's templates, which stop at 96 px, to cover
objects of up to 112 px at 256², and its thresholds to be rescaled: not done.)

Each size is asked for as an ordinary request, so it runs the way the model's catalog entry says: the
built-in layout model draws a canvas above `refine_above` = 64 at 64² and enlarges it (the approaches
measured against that, convolutional sampling included: docs/evaluation.md, "Larger canvases").

Reported per size: box accuracy, split by box side (small: ≤ SMALL_PX px at 64², i.e. ≤ 5 latent
cells of the 64² model; large: above) and by boxes per layout; images with every box right; images
with a detection that no box explains (an object drawn twice, outside every box, or in the
wrong colour or shape); mean IoU; seconds per image.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from .evaluate import evaluate_layout2img, layout2img_prompts
from .metrics import layout_breakdown

SMALL_PX = 20   # box side at 64² (objects are 12-28 px): <= this is "small"
GRID_CELL = 256


def _recording(generate: Callable, native: list) -> Callable:
    """Wrap a layout2img generator so that its native-size outputs are kept (for the grid)."""
    def call(prompts, layouts, seeds):
        imgs = generate(prompts, layouts, seeds)
        native.extend(np.asarray(im.convert("RGB") if isinstance(im, Image.Image) else im) for im in imgs)
        return imgs
    return call


def evaluate_sizes(make_generate: Callable[[int], Callable], sizes: Sequence[int], n: int = 48, seed: int = 0,
                   grid_rows: int = 3, latent_factor: int = 4) -> tuple[str, Image.Image, dict]:
    """make_generate(size) -> a layout2img generator producing size × size images. Runs the layout
    eval (no FID) at each size on the same layouts and seeds; latent_factor: the autoencoder's
    downsampling, for the latent sizes shown. Returns (markdown table, grid, results)."""
    runs = {}
    natives = {}
    for size in sizes:
        natives[size] = []
        t = time.monotonic()
        _, _, res = evaluate_layout2img(_recording(make_generate(size), natives[size]), n=n, seed=seed,
                                        with_fid=False)
        seconds = (time.monotonic() - t) / n
        shapes = {im.shape[:2] for im in natives[size]}
        if shapes != {(size, size)}:
            raise ValueError(f"asked for {size}×{size}, the generator returned {sorted(shapes)}")
        runs[size] = {"size": size, "summary": res["summary"], "seconds_per_image": seconds,
                      "breakdown": layout_breakdown(res["per_prompt"], SMALL_PX / 64),
                      "per_prompt": res["per_prompt"]}
    results = {"n": n, "seed": seed, "sizes": list(sizes), "small_px": SMALL_PX, "latent_factor": latent_factor,
               "judged": "box-filter downsample to 64x64, then the 64x64 detector", "runs": runs}
    layouts = [sc.boxes for sc in layout2img_prompts(min(n, grid_rows))]
    return size_table(runs, latent_factor), size_grid(natives, layouts, sizes, latent_factor), results


def _cell(r: tuple) -> str:
    acc, hits, n = r
    return "n/a" if not n else f"{100 * acc:.1f} % ({hits}/{n})"


def size_table(runs: dict, f: int = 4) -> str:
    """One row per size: per-box accuracy overall, by box size and by boxes per layout, and more."""
    b0 = next(iter(runs.values()))["breakdown"]
    counts = sorted(k for k in b0 if k.endswith("box") or k.endswith("boxes"))
    head = ["canvas", "latent", "boxes right", f"small (≤ {SMALL_PX} px at 64²)", f"large (> {SMALL_PX} px)",
            *[f"layouts of {c}" for c in counts], "images all right", "images with a detection no box explains",
            "mean IoU", "s / image"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for size, run in runs.items():
        b = run["breakdown"]
        s = run["summary"]
        row = [f"{size}²", f"{size // f}²", _cell(b["all"]), _cell(b["small"]), _cell(b["large"]),
               *[_cell(b[c]) for c in counts], _cell(b["images_all_right"]), _cell(b["images_extra"]),
               f"{s['mean_iou']:.3f}", f"{run['seconds_per_image']:.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _layout_sketch(layout: list[dict], cell: int) -> Image.Image:
    """The requested boxes as outlines, labelled."""
    im = Image.new("RGB", (cell, cell), (255, 255, 255))
    d = ImageDraw.Draw(im)
    for b in layout:
        x0, y0, x1, y1 = (round(v * cell) for v in b["box"])
        d.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(90, 90, 90))
        d.text((x0 + 2, y0 + 1), b["label"], fill=(0, 0, 0))
    return im


def size_grid(natives: dict, layouts: list, sizes: Sequence[int], f: int = 4, cell: int = GRID_CELL) -> Image.Image:
    """Rows: the given layouts; columns: the requested boxes, then the output at each size, each shown
    at `cell` px (smaller outputs enlarged with nearest neighbour, so their pixels stay visible)."""
    pad = 6
    title_h = 14
    n_rows = min(len(layouts), *(len(v) for v in natives.values()))
    W = (len(sizes) + 1) * (cell + pad) + pad
    canvas = Image.new("RGB", (W, title_h + n_rows * (cell + pad) + pad), (235, 235, 235))
    draw = ImageDraw.Draw(canvas)
    for c, title in enumerate(["requested boxes", *[f"{s}x{s} (latent {s // f}x{s // f})" for s in sizes]]):
        draw.text((pad + c * (cell + pad), 2), title, fill=(0, 0, 0))
    for r in range(n_rows):
        y = title_h + r * (cell + pad)
        canvas.paste(_layout_sketch(layouts[r], cell), (pad, y))
        for c, s in enumerate(sizes, 1):
            im = Image.fromarray(natives[s][r]).resize((cell, cell), Image.NEAREST)
            canvas.paste(im, (pad + c * (cell + pad), y))
    return canvas
