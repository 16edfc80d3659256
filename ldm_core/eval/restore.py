"""Evaluation of the image-conditioned tasks: inpainting and 4x super-resolution.

An inpainter is any callable `inpaint(prompt, image, mask, seed) -> image` (PIL in and out,
mask white = repaint); a super-resolver any callable `upscale(image, seed) -> image`. The CLI
builds them from the model stack; tests feed fakes.

Inpainting (scenes `sample_scene(21_000_000 + i)`): one object of each scene is masked
(`random_mask(..., "object")`, a dilated box around it). With the scene's caption as the prompt
the object must come back (the caption judge on the whole image: every object right, nothing
extra); outside the mask the image must not change (PSNR there, "exact" when bit-identical).
With an empty prompt the hole must be filled plausibly: FID on the render classifier's features
against the ground truth, beside the unfilled hole (grey) as the bad reference.

The wider inpainting eval (`evaluate_inpaint_wide`, scenes `sample_scene(21_200_000 + i)`, the four
caption forms in turn): every scene's object is masked in each of the ways people mask one
(`object_mask`: a padded, tight, loose, elliptical, brushed or one-sided box; the object drawn
at random), and asked for with two prompts: the scene's caption and the masked object alone
("a red circle"). The caption judge scores the whole image as before; results are stratified by
mask style, prompt, caption form, which object, its size, and whether the mask reaches another object.

Super-resolution: held-out scenes (`sample_scene(21_500_000 + i)`) and held-out photo crops
(`ldm_core.data.photos.heldout_crops`), bicubic-downsampled 4x, upscaled; PSNR and SSIM against
the ground truth beside bicubic upsampling of the same input.
"""
from __future__ import annotations

import random
import resource
import time
from typing import Callable

import numpy as np
from PIL import Image

from ..data.degrade import degrade
from ..data.judge import judge_caption
from ..data.masks import OBJECT_MASK_STYLES, object_mask, random_mask
from ..data.photos import heldout_crops
from ..data.shapes import CAPTION_FORMS, sample_scene
from .evaluate import _grid
from .features import DEFAULT_DIR, features, fid

INPAINT_SEED0 = 21_000_000
INPAINT_WIDE_SEED0 = 21_200_000
PROMPT_KINDS = ("caption", "object")
SUPERRES_SEED0 = 21_500_000

InpaintFn = Callable[[str, Image.Image, Image.Image, int], Image.Image]
UpscaleFn = Callable[[Image.Image, int], Image.Image]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    from skimage.metrics import structural_similarity  # lazy: scikit-image: only for its sample photographs
    return float(structural_similarity(a, b, channel_axis=2, data_range=255))


def _db(x: float) -> str:
    return "exact (bit-identical)" if x == float("inf") else f"{x:.1f} dB"


def evaluate_inpaint(inpaint: InpaintFn, n: int = 100, seed: int = 0, with_fid: bool = True,
                     classifier=None) -> tuple[str, Image.Image, dict]:
    scenes = [sample_scene(INPAINT_SEED0 + i) for i in range(n)]
    masks = [random_mask(s, random.Random(INPAINT_SEED0 + i), "object") for i, s in enumerate(scenes)]
    ok = []
    outside = []
    filled = []
    empty = []
    holes = []
    for i, (s, m) in enumerate(zip(scenes, masks)):
        img = Image.fromarray(s.image)
        mimg = Image.fromarray((m * 255).astype(np.uint8))
        out = np.asarray(inpaint(s.caption, img, mimg, seed + i).convert("RGB"))
        filled.append(out)
        ok.append(bool(judge_caption(s, out)["correct"]))
        outside.append(psnr(out[~m], s.image[~m]))
        if with_fid:
            empty.append(np.asarray(inpaint("", img, mimg, seed + i).convert("RGB")))
            holes.append(np.where(m[..., None], 127, s.image).astype(np.uint8))
    res = {"n": n, "object_restored": float(np.mean(ok)), "object_restored_count": int(sum(ok)),
           "outside_psnr_min": float(min(outside)), "outside_exact": int(sum(o == float("inf") for o in outside))}
    lines = ["| inpainting (one object masked) | value |", "|---|---|",
             f"| object restored with the scene's caption | **{100 * res['object_restored']:.0f} %** "
             f"({res['object_restored_count']} / {n}) |",
             f"| outside the mask, worst image | {_db(res['outside_psnr_min'])} "
             f"({res['outside_exact']} / {n} bit-identical) |"]
    if with_fid:
        clf = classifier or DEFAULT_DIR
        f_gt = features(np.stack([s.image for s in scenes]), clf)
        res["fid_empty_prompt"] = fid(features(np.stack(empty), clf), f_gt)
        res["fid_unfilled_hole"] = fid(features(np.stack(holes), clf), f_gt)
        lines += [f"| FID, empty prompt, vs ground truth | **{res['fid_empty_prompt']:.1f}** |",
                  f"| reference: FID of the unfilled (grey) hole | {res['fid_unfilled_hole']:.1f} |"]
    rows = [("ground truth", [s.image for s in scenes[:8]], [None] * 8),
            ("masked", [np.where(m[..., None], 127, s.image).astype(np.uint8) for s, m in zip(scenes[:8], masks)],
             [None] * 8),
            ("with caption (green = object right)", filled[:8], ok[:8])]
    if with_fid:
        rows.append(("empty prompt", empty[:8], [None] * 8))
    return "\n".join(lines), _grid(rows), res


def inpaint_cases(n_scenes: int, seeds: int = 1) -> list[dict]:
    """The wider eval's cases: scene x mask style x prompt kind x seed, each with its strata."""
    cases = []
    for i in range(n_scenes):
        s = sample_scene(INPAINT_WIDE_SEED0 + i, CAPTION_FORMS[i % len(CAPTION_FORMS)])
        for k, style in enumerate(OBJECT_MASK_STYLES):
            rng = random.Random(INPAINT_WIDE_SEED0 + 97 * i + k)
            j = rng.randrange(len(s.objects))
            m = object_mask(s, rng, j, style)
            o = s.objects[j]
            others = [p for q, p in enumerate(s.objects) if q != j]
            reaches = any(m[p.y:p.y + p.size, p.x:p.x + p.size].any() for p in others)
            for prompt in PROMPT_KINDS:
                for r in range(seeds):
                    cases.append({"scene": s, "mask": m, "prompt": s.caption if prompt == "caption" else f"a {o.label}",
                                  "seed": 1000 * i + 10 * k + r, "strata": {
                                      "mask style": style, "prompt": prompt, "caption form": s.form,
                                      "masked object": ("first", "second", "third")[j],
                                      "object size": "small (12-17 px)" if o.size < 18 else
                                      "medium (18-22 px)" if o.size < 23 else "large (23-28 px)",
                                      "mask reaches another object": "yes" if reaches else "no"}})
    return cases


def evaluate_inpaint_wide(inpaint: InpaintFn, n_scenes: int = 24, seeds: int = 1) -> tuple[str, Image.Image, dict]:
    """The wider inpainting eval (module doc): the restored share overall and per stratum."""
    cases = inpaint_cases(n_scenes, seeds)
    rows = []
    fails = []
    for c in cases:
        s = c["scene"]
        m = c["mask"]
        out = np.asarray(inpaint(c["prompt"], Image.fromarray(s.image),
                                 Image.fromarray((m * 255).astype(np.uint8)), c["seed"]).convert("RGB"))
        ok = bool(judge_caption(s, out)["correct"])
        rows.append({**c["strata"], "ok": ok})
        if not ok and len(fails) < 8:
            fails.append((np.where(m[..., None], 127, s.image).astype(np.uint8), out, c["prompt"]))
    ok = [r["ok"] for r in rows]
    res = {"n": len(rows), "n_scenes": n_scenes, "seeds": seeds, "object_restored": float(np.mean(ok)),
           "object_restored_count": int(sum(ok)), "strata": {}}
    lines = [f"| wider inpainting eval ({n_scenes} scenes x {len(OBJECT_MASK_STYLES)} mask styles x "
             f"{len(PROMPT_KINDS)} prompts x {seeds} seed) | restored | n |", "|---|---|---|",
             f"| **all cases** | **{100 * res['object_restored']:.1f} %** | {len(rows)} |"]
    for key in rows[0]:
        if key == "ok":
            continue
        groups: dict[str, list[bool]] = {}
        for r in rows:
            groups.setdefault(r[key], []).append(r["ok"])
        res["strata"][key] = {g: {"restored": float(np.mean(v)), "n": len(v)} for g, v in groups.items()}
        lines += [f"| {key}: {g} | {100 * np.mean(v):.1f} % | {len(v)} |" for g, v in groups.items()]
    grid = _grid([("masked (failures)", [f[0] for f in fails], [None] * len(fails)),
                  ("result", [f[1] for f in fails], [False] * len(fails))]) if fails else None
    return "\n".join(lines), grid, res


def evaluate_superres(upscale: UpscaleFn, n: int = 100, n_photos: int = 64, seed: int = 0,
                      large: UpscaleFn | None = None) -> tuple[str, Image.Image, dict]:
    sets = {"scenes": [sample_scene(SUPERRES_SEED0 + i).image for i in range(n)]}
    if n_photos:
        sets["photos"] = list(heldout_crops(n_photos))
    res = {}
    lines = ["| 4x super-resolution (16² -> 64²) | SR PSNR | bicubic PSNR | SR SSIM | bicubic SSIM |",
             "|---|---|---|---|---|"]
    rows = []
    for name, gts in sets.items():
        sr = []
        bic = []
        for i, gt in enumerate(gts):
            low = Image.fromarray(degrade(gt, random.Random(i), bicubic_only=True))
            sr.append(np.asarray(upscale(low, seed + i).convert("RGB")))
            bic.append(np.asarray(low.resize(gt.shape[1::-1], Image.BICUBIC)))
        r = {"sr_psnr": float(np.mean([psnr(a, b) for a, b in zip(sr, gts)])),
             "bicubic_psnr": float(np.mean([psnr(a, b) for a, b in zip(bic, gts)])),
             "sr_ssim": float(np.mean([ssim(a, b) for a, b in zip(sr, gts)])),
             "bicubic_ssim": float(np.mean([ssim(a, b) for a, b in zip(bic, gts)])), "n": len(gts)}
        res[name] = r
        lines.append(f"| held-out {name} (n={len(gts)}) | **{r['sr_psnr']:.2f} dB** | {r['bicubic_psnr']:.2f} dB | "
                     f"**{r['sr_ssim']:.3f}** | {r['bicubic_ssim']:.3f} |")
        rows += [(f"{name}: ground truth", gts[:8], [None] * 8), (f"{name}: bicubic", bic[:8], [None] * 8),
                 (f"{name}: super-resolved", sr[:8], [None] * 8)]
    if large is not None:
        photo = Image.fromarray(heldout_crops(1, seed=1)[0]).resize((256, 256), Image.BICUBIC)
        t = time.monotonic()
        big = large(photo, seed)
        res["large"] = {"input": "256x256", "output": f"{big.width}x{big.height}",
                        "seconds": time.monotonic() - t,
                        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        lines += ["", f"256² -> {big.width}x{big.height} (tiled): {res['large']['seconds']:.1f} s, "
                      f"process peak RSS {res['large']['peak_rss_mib']:.0f} MiB"]
    return "\n".join(lines), _grid(rows), res
