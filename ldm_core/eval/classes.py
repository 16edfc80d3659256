"""Evaluation of the unconditional (§4.2) and class-conditional (§4.1) models.

    python -m ldm_core.eval classes [--uncond models/shapes-uncond] [--class2img models/shapes-class2img]
        [--n-per-class 20 --n-uncond 480 --steps 25 --guidance 3.0]

Class-conditional: every class (`train/class2img.py`'s 24 "<colour> <shape>" kinds) `n_per_class`
times (generation seeds 0..N-1, image i of class i % 24), with guidance and without. A sample is
right when the detector (`ldm_core/data/detector.py`) finds at least one object and every object it
finds is of the asked class (`class_accuracy`); also reported: objects found per image, and FID
(the project's classifier features, `features.py`) against renders of the same classes
(`class_scene`, seeds CLASS_REF_SEED0 + i).

Unconditional: `n_uncond` samples (seeds 0..N-1): objects found per image, the share with 1-3
objects found, the share whose every object is an exact palette-colour shape the detector fits
well (score >= 0.8), and FID against `n_uncond` Shapes World renders (`sample_scene`, seeds
UNCOND_REF_SEED0 + i).

Floors: the same metrics for samples of a freshly initialised model of the same architecture
(torch seed 0); references: a second set of renders against the first (what a perfect model
scores at this sample size).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.detector import detect
from ..data.object_kinds import CLASS_NAMES, class_scene
from ..data.shapes import sample_scene
from .evaluate import _grid
from ..train.class_models import load_exported, sample_images
from .features import features, fid

CLASS_REF_SEED0 = 31_000_000      # renders FID compares class2img samples with
CLASS_REF2_SEED0 = 31_500_000     # a second set: the GT-vs-GT reference
UNCOND_REF_SEED0 = 32_000_000     # Shapes World renders FID compares unconditional samples with
UNCOND_REF2_SEED0 = 32_500_000
GRID_CLASSES = (0, 3, 6, 9, 12, 15, 18, 21)   # every shape twice, every colour: the docs grid's rows
CLEAN_SCORE = 0.8


def class_accuracy(images: np.ndarray, labels: list[int]) -> dict:
    """A sample is right when the detector finds at least one object and every object it finds is
    of the asked class ("<colour> <shape>"). Returns the share right, objects found per image and
    the per-image lists."""
    ok, found = [], []
    for im, y in zip(images, labels):
        dets = detect(im)
        found.append(len(dets))
        ok.append(bool(dets) and all(d.label == CLASS_NAMES[y] for d in dets))
    return {"accuracy": float(np.mean(ok)) if ok else float("nan"),
            "objects_per_image": float(np.mean(found)) if found else float("nan"), "correct": ok, "found": found}


def per_class(correct: list[bool], labels: list[int]) -> dict[str, float]:
    return {CLASS_NAMES[c]: float(np.mean([ok for ok, y in zip(correct, labels) if y == c]))
            for c in sorted(set(labels))}


def scene_stats(images: np.ndarray) -> dict:
    """Objects found per image, the share with 1-3 found, the share whose objects all fit well."""
    dets = [detect(im) for im in images]
    n = [len(d) for d in dets]
    return {"objects_per_image": float(np.mean(n)), "share_1_to_3": float(np.mean([1 <= k <= 3 for k in n])),
            "share_clean": float(np.mean([1 <= len(d) <= 3 and all(x.score >= CLEAN_SCORE for x in d) for d in dets]))}


def class_labels(n_per_class: int, n_classes: int = 24) -> list[int]:
    return [i % n_classes for i in range(n_per_class * n_classes)]


def class_renders(labels: list[int], seed0: int) -> np.ndarray:
    return np.stack([class_scene(seed0 + i, y).image for i, y in enumerate(labels)])


def uncond_renders(n: int, seed0: int) -> np.ndarray:
    return np.stack([sample_scene(seed0 + i).image for i in range(n)])


def fresh_like(parts: dict) -> dict:
    """The same architecture, freshly initialised (torch seed 0): the floor."""
    torch.manual_seed(0)
    out = dict(parts)
    out["unet"] = type(parts["unet"]).from_config(parts["unet"].config).eval()
    if parts["class_embedder"] is not None:
        out["class_embedder"] = type(parts["class_embedder"]).from_config(parts["class_embedder"].config).eval()
    return out


def _sample(parts: dict, seeds, labels=None, guidance: float = 1.0, steps: int = 25) -> np.ndarray:
    return sample_images(parts["vae"], parts["unet"], parts["scheduler"].config, seeds, labels,
                         parts["class_embedder"], guidance, steps)


def evaluate_class2img(parts: dict, n_per_class: int = 20, steps: int = 25, guidance: float = 3.0,
                       floor: bool = True) -> tuple[str, Image.Image, dict]:
    """Accuracy (overall and per class), objects per image and FID, guided and not; with `floor`
    also a fresh model's. Returns (markdown, grid of GRID_CLASSES guided, results)."""
    labels = class_labels(n_per_class, len(CLASS_NAMES))
    seeds = list(range(len(labels)))
    f_ref = features(class_renders(labels, CLASS_REF_SEED0))
    res = {"n": len(labels), "n_per_class": n_per_class, "steps": steps, "seeds": f"0..{len(labels) - 1}",
           "reference_fid": fid(features(class_renders(labels, CLASS_REF2_SEED0)), f_ref), "runs": {}}
    runs = [(f"guidance {guidance:g}", parts, guidance), ("no guidance", parts, 1.0)]
    if floor:
        runs.append(("fresh model (floor), guidance %g" % guidance, fresh_like(parts), guidance))
    grid = None
    for name, p, g in runs:
        t0 = time.monotonic()
        images = _sample(p, seeds, labels, g, steps)
        secs = time.monotonic() - t0
        acc = class_accuracy(images, labels)
        res["runs"][name] = {"accuracy": acc["accuracy"], "objects_per_image": acc["objects_per_image"],
                             "fid": fid(features(images), f_ref), "per_class": per_class(acc["correct"], labels),
                             "sample_s_per_image": secs / len(labels)}
        if grid is None:
            grid = _grid([(CLASS_NAMES[c], [images[i] for i in range(c, len(labels), len(CLASS_NAMES))],
                           [acc["correct"][i] for i in range(c, len(labels), len(CLASS_NAMES))])
                          for c in GRID_CLASSES])
    lines = [f"{len(labels)} samples ({n_per_class} per class, generation seeds 0..{len(labels) - 1}), "
             f"{steps} steps (DPM-Solver++ 2M)", "",
             "| samples | class accuracy | objects / image | FID vs renders |", "|---|---|---|---|"]
    for name, r in res["runs"].items():
        lines.append(f"| {name} | {100 * r['accuracy']:.1f} % | {r['objects_per_image']:.2f} | {r['fid']:.1f} |")
    lines.append(f"| renders vs renders (reference) | 100.0 % | | {res['reference_fid']:.1f} |")
    names = list(res["runs"])[:2]
    lines += ["", "| class | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for c in CLASS_NAMES:
        lines.append(f"| {c} | " + " | ".join(f"{100 * res['runs'][n]['per_class'][c]:.0f} %" for n in names) + " |")
    return "\n".join(lines), grid, res


def evaluate_unconditional(parts: dict, n: int = 480, steps: int = 25, floor: bool = True
                           ) -> tuple[str, Image.Image, dict]:
    seeds = list(range(n))
    f_ref = features(uncond_renders(n, UNCOND_REF_SEED0))
    res = {"n": n, "steps": steps, "seeds": f"0..{n - 1}", "runs": {}}
    ref2 = uncond_renders(n, UNCOND_REF2_SEED0)
    res["reference"] = {**scene_stats(ref2), "fid": fid(features(ref2), f_ref)}
    runs = [("model", parts)] + ([("fresh model (floor)", fresh_like(parts))] if floor else [])
    grid = None
    for name, p in runs:
        t0 = time.monotonic()
        images = _sample(p, seeds, steps=steps)
        secs = time.monotonic() - t0
        res["runs"][name] = {**scene_stats(images), "fid": fid(features(images), f_ref),
                             "sample_s_per_image": secs / n}
        if grid is None:
            grid = _grid([("", list(images[r * 8:(r + 1) * 8]), [None] * 8) for r in range(4)])
    lines = [f"{n} samples (seeds 0..{n - 1}), {steps} steps (DPM-Solver++ 2M)", "",
             "| samples | objects / image | 1-3 objects | all objects clean | FID vs renders |",
             "|---|---|---|---|---|"]
    for name, r in list(res["runs"].items()) + [("renders vs renders (reference)", res["reference"])]:
        lines.append(f"| {name} | {r['objects_per_image']:.2f} | {100 * r['share_1_to_3']:.1f} % | "
                     f"{100 * r['share_clean']:.1f} % | {r['fid']:.1f} |")
    return "\n".join(lines), grid, res


def run(uncond: str | None, class2img: str | None, out: Path, n_per_class: int = 20, n_uncond: int = 480,
        steps: int = 25, guidance: float = 3.0, floor: bool = True) -> tuple[str, dict, dict]:
    """Both evaluations of exported folders; returns (report, results, {name: grid})."""
    report, results, grids = [], {}, {}
    if class2img:
        text, grids["class2img"], results["class2img"] = evaluate_class2img(
            load_exported(class2img), n_per_class, steps, guidance, floor)
        report.append(f"## class2img: {class2img}\n\n{text}")
    if uncond:
        text, grids["uncond"], results["uncond"] = evaluate_unconditional(load_exported(uncond), n_uncond, steps, floor)
        report.append(f"## unconditional: {uncond}\n\n{text}")
    return "\n\n".join(report), results, grids


def add_arguments(p) -> None:
    """`python -m ldm_core.eval classes`'s options."""
    p.add_argument("--uncond", default="models/shapes-uncond", help="exported unconditional folder ('' = skip)")
    p.add_argument("--class2img", default="models/shapes-class2img", help="exported class2img folder ('' = skip)")
    p.add_argument("--n-per-class", type=int, default=20)
    p.add_argument("--n-uncond", type=int, default=480)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--no-floor", action="store_true", help="skip the freshly initialised model's floor")


def task(a) -> None:
    """The unconditional and class-conditional models, from their exported folders."""
    out = Path(a.out or "outputs/eval/classes")
    report, res, grids = run(a.uncond or None, a.class2img or None, out, a.n_per_class, a.n_uncond, a.steps,
                             a.guidance, floor=not a.no_floor)
    out.mkdir(parents=True, exist_ok=True)
    for name, grid in grids.items():
        grid.save(out / f"{name}-grid.png")
    (out / "report.md").write_text(report + "\n")
    (out / "results.json").write_text(json.dumps(res, indent=2, default=str))
    print(report)
