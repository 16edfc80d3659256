"""Evaluation entry point.

    python -m ldm_core.eval detector [--n 2000]
    python -m ldm_core.eval train-classifier [--out models/eval-classifier --steps 4000 --seed 0]
    python -m ldm_core.eval fid-floor [--n 1000]
    python -m ldm_core.eval autoencoder --model models/shapes-autoencoder
    python -m ldm_core.eval text2img --model NAME [--n-per-form 50 --steps 25 --plan-layout on|off]
    python -m ldm_core.eval layout2img --model NAME [--n 100 --steps 25] [--size 64 128 256]
    python -m ldm_core.eval guidance-sweep --model NAME [--guidance 3 4 5.5 7.5 --n-per-form 24]
    python -m ldm_core.eval inpaint --model NAME [--n 100 --steps 25]
    python -m ldm_core.eval inpaint-wide --model NAME [--n-scenes 24 --seeds 1]
    python -m ldm_core.eval inpaint-rect [--model shapes-inpaint --n 100 --fill white --pad 3 --vary fill=image ...]
    python -m ldm_core.eval superres --model NAME [--n 100 --n-photos 64 --steps 25]
    python -m ldm_core.eval classes [--n-per-class 20 --n-uncond 480 --steps 25 --guidance 3]
    python -m ldm_core.eval semantic [--model shapes-semantic --n 48 --size 64 128 256]
    python -m ldm_core.eval zoo-vs-hub txt2img-large [--steps 50 --seeds 0 1]   (ldm_core/eval/zoo_vs_hub.py)
    (--catalog FILE evaluates models of another catalog; --speedups none|deepcache|bf16|deepcache,bf16
     in the model evaluations and guidance-sweep: default the model's own, ldm_core/speedups.py)

Reports are printed and written (report.md, results.json, grid.png) under --out
(default outputs/eval/<task>[-<model>]).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL

from ldm_core.stack import ModelStack
from ldm_core.tasks import TASKS

from ..data.detector import detect, match
from ..data.images import from_uint8, save_grid, to_uint8
from ..data.images import psnr as psnr_db
from ..data.shapes import render_batch
from ..pipelines.latents import vae_scale_factor
from . import classes, inpaint_rect, semantic, zoo_vs_hub
from .adapters import stack_inpaint, stack_layout2img, stack_superres, stack_text2img, stack_text2img_guided
from .detector import validate
from .evaluate import FLOOR_SEED0, TEXT_SEED0, evaluate_layout2img, evaluate_text2img, guidance_sweep  # noqa: I001
from .evaluate import layout_stage_report, relayout, text2img_prompts
from .features import features, fid, train_classifier
from .restore import evaluate_inpaint, evaluate_inpaint_wide, evaluate_superres
from .sizes import evaluate_sizes

# --- tasks -----------------------------------------------------------------------------------

def _write(out: Path, report: str, results: dict, grid=None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(report + "\n")
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    if grid is not None:
        grid.save(out / "grid.png")
    print(report)
    print(f"\nwritten to {out}/")


def task_detector(a) -> None:
    rows = []
    for blur, noise in [(0.0, 0.0), (a.blur, a.noise / 255)]:
        t = time.monotonic()
        r = validate(a.n, blur, noise)
        r["ms_per_scene"] = 1000 * (time.monotonic() - t) / a.n
        rows.append(r)
    lines = ["| images | scenes | scene accuracy | exact boxes | min IoU | ms / scene |", "|---|---|---|---|---|---|"]
    for r in rows:
        name = "GT renders" if not r["blur"] else f"blur σ={r['blur']} px + noise σ={a.noise:g}/255"
        lines.append(f"| {name} | {r['scenes']} | {100 * r['scene_accuracy']:.2f} % | "
                     f"{100 * r['exact_boxes']:.2f} % | {r['min_iou']:.3f} | {r['ms_per_scene']:.1f} |")
    _write(Path(a.out or "outputs/eval/detector"), "\n".join(lines), {"runs": rows})


def task_train_classifier(a) -> None:
    t = time.monotonic()
    cfg = train_classifier(a.out or "models/eval-classifier", steps=a.steps, seed=a.seed)
    print("held-out:", json.dumps(cfg["heldout"]))
    print("held-out, blur + noise:", json.dumps(cfg["heldout_degraded"]))
    print(f"total {(time.monotonic() - t) / 60:.1f} min")


def task_fid_floor(a) -> None:
    f_a = features(render_batch(range(TEXT_SEED0, TEXT_SEED0 + a.n))[0])
    f_b = features(render_batch(range(FLOOR_SEED0, FLOOR_SEED0 + a.n))[0])
    blank = features(np.full((a.n, 64, 64, 3), 255, np.uint8))
    scenes = text2img_prompts(a.n_per_form)
    f_p = features(np.stack([s.image for s in scenes]))
    f_r = features(np.stack([relayout(s, FLOOR_SEED0 + k) for k, s in enumerate(scenes)]))
    res = {"n": a.n, "gt_vs_gt": fid(f_a, f_b), "gt_vs_blank": fid(f_a, blank),
           "text2img_n": len(scenes), "text2img_floor": fid(f_p, f_r)}
    report = (f"FID GT vs GT (two disjoint sets of {a.n} random renders): {res['gt_vs_gt']:.1f}  \n"
              f"FID GT vs blank white ({a.n}): {res['gt_vs_blank']:.1f}  \n"
              f"text2img floor (its {len(scenes)} prompts vs the same prompts re-laid-out): "
              f"{res['text2img_floor']:.1f}")
    _write(Path(a.out or "outputs/eval/fid-floor"), report, res)


AUTOENCODER_SEED0 = 21_000_000


def task_autoencoder(a) -> None:


    path = Path(a.model)
    if not (path / "config.json").exists():
        raise SystemExit(f"no autoencoder at {path} (expected {path}/config.json); train it with "
                         "`python -m ldm_core.train autoencoder` and export it there first")
    vae = AutoencoderKL.from_pretrained(str(path)).float().eval()
    images, scenes = render_batch(range(AUTOENCODER_SEED0, AUTOENCODER_SEED0 + a.n))
    recon = []
    with torch.no_grad():
        for i in range(0, a.n, 32):
            y = vae.decode(vae.encode(from_uint8(images[i:i + 32])).latent_dist.mode()).sample
            recon.append(to_uint8(y))
    recon = np.concatenate(recon)  # (N, 64, 64, 3)
    psnr = psnr_db(images, recon)
    ok = 0
    for sc, im in zip(scenes, recon):  # does the detector still read the same scene?
        dets = detect(im)
        pairs = match([o.label for o in sc.objects], [o.box_px for o in sc.objects],
                      [d.label for d in dets], [d.box_px for d in dets])
        ok += len(dets) == len(sc.objects) == len(pairs) and all(iou >= 0.9 for *_, iou in pairs)
    res = {"model": str(path), "n": a.n, "psnr_db": psnr, "scenes_read_correctly": ok / a.n}
    report = (f"| autoencoder | held-out scenes | PSNR | detector reads reconstruction correctly |\n|---|---|---|---|\n"
              f"| {path} | {a.n} | {psnr:.2f} dB | {100 * ok / a.n:.1f} % |")
    out = Path(a.out or f"outputs/eval/autoencoder-{path.name}")
    out.mkdir(parents=True, exist_ok=True)
    save_grid(np.concatenate([images[:8], recon[:8], images[8:16], recon[8:16]]), out / "grid.png")
    _write(out, report, res)


def _head(title: str, a, fn, res: dict) -> str:
    """The report's heading; the speed-ups that ran (the results' info) when they were not just "none",
    also written into `res`."""
    ran = sorted(getattr(fn, "ran", ()))
    res["speedups"] = {"requested": a.speedups, "ran": ran}
    return f"## {title}: {a.model}\n\n" + (f"speed-ups: {'; '.join(ran)}\n\n" if ran not in ([], ["none"]) else "")


def task_text2img(a) -> None:
    generate = stack_text2img(a.model, a.steps, a.catalog, a.speedups, plan_layout=a.plan_layout)
    table, grid, res = evaluate_text2img(generate, n_per_form=a.n_per_form, seed=a.seed)
    table = layout_stage_report(generate.plans, res) + table
    out = a.out or f"outputs/eval/text2img-{a.model}" + (f"-plan-{a.plan_layout}" if a.plan_layout else "")
    _write(Path(out), _head("text2img", a, generate, res) + table, res, grid)


def task_layout2img(a) -> None:
    if a.size:
        return task_layout2img_sizes(a)
    generate = stack_layout2img(a.model, a.steps, a.catalog, speedups=a.speedups)
    table, grid, res = evaluate_layout2img(generate, n=a.n, seed=a.seed)
    head = _head("layout2img", a, generate, res)
    _write(Path(a.out or f"outputs/eval/layout2img-{a.model}"), head + table, res, grid)


def task_layout2img_sizes(a) -> None:
    """The same layouts and seeds at each --size (paper §4.3.2), judged after a box-filter downsample to 64²."""
    stack = ModelStack.from_catalog(a.catalog)
    f = vae_scale_factor(stack.load(a.model).vae)
    table, grid, res = evaluate_sizes(lambda size: stack_layout2img(a.model, a.steps, stack=stack, size=size,
                                                                    speedups=a.speedups),
                                      a.size, n=a.n, seed=a.seed, latent_factor=f)
    head = (f"## layout2img at larger canvases: {a.model}\n\n{a.n} layouts (seeds {a.seed}..{a.seed + a.n - 1}), "
            f"{a.steps} steps; judged after a box-filter downsample to 64×64\n\n")
    _write(Path(a.out or f"outputs/eval/layout2img-sizes-{a.model}"), head + table, res, grid)


def task_guidance_sweep(a) -> None:
    generate = stack_text2img_guided(a.model, a.steps, a.catalog, a.speedups)
    table, res = guidance_sweep(generate, a.guidance, a.n_per_form)
    _write(Path(a.out or f"outputs/eval/guidance-{a.model}"), _head("guidance sweep", a, generate, res) + table, res)


def task_inpaint(a) -> None:
    inpaint = stack_inpaint(a.model, a.steps, a.catalog, a.speedups)
    table, grid, res = evaluate_inpaint(inpaint, n=a.n, seed=a.seed)
    _write(Path(a.out or f"outputs/eval/inpaint-{a.model}"), _head("inpaint", a, inpaint, res) + table, res, grid)


def task_inpaint_wide(a) -> None:
    inpaint = stack_inpaint(a.model, a.steps, a.catalog, a.speedups)
    table, grid, res = evaluate_inpaint_wide(inpaint, a.n_scenes, a.seeds)
    head = _head("inpaint, wider eval", a, inpaint, res)
    _write(Path(a.out or f"outputs/eval/inpaint-wide-{a.model}"), head + table, res, grid)


def task_superres(a) -> None:
    up = stack_superres(a.model, a.steps, a.catalog, a.speedups)
    table, grid, res = evaluate_superres(up, n=a.n, n_photos=a.n_photos, seed=a.seed,
                                         large=None if a.no_large else up)
    _write(Path(a.out or f"outputs/eval/superres-{a.model}"), _head("superres", a, up, res) + table, res, grid)


SPEEDUPS_HELP = ('"none", "deepcache", "bf16" or "deepcache,bf16" in every request (default: the catalog '
                 "model's own, what users get)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ldm_core.eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="task", required=True)

    def add(name, fn, help):
        p = sub.add_parser(name, help=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.set_defaults(fn=fn)
        p.add_argument("--out", default=None, help="output folder")
        p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
        return p

    p = add("detector", task_detector, "validate the detector on ground-truth renders, clean and degraded")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--blur", type=float, default=0.7, help="Gaussian blur sigma (px) of the degraded run")
    p.add_argument("--noise", type=float, default=5.0, help="noise sigma (in /255 units) of the degraded run")
    p = add("train-classifier", task_train_classifier, "train the FID feature classifier")
    p.add_argument("--steps", type=int, default=4000), p.add_argument("--seed", type=int, default=0)
    p = add("fid-floor", task_fid_floor, "FID between two disjoint sets of GT renders")
    p.add_argument("--n", type=int, default=1000), p.add_argument("--n-per-form", type=int, default=50, help="per form")
    p = add("autoencoder", task_autoencoder, "reconstruction PSNR of an exported AutoencoderKL")
    p.add_argument("--model", default="models/shapes-autoencoder")
    p.add_argument("--n", type=int, default=256)
    p = add("guidance-sweep", task_guidance_sweep, "text2img accuracy per guidance scale on validation prompts")
    p.add_argument("--model", required=True, help="catalog model name")
    p.add_argument("--catalog", default=None, help="catalog file (default: models/catalog.toml)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, nargs="+", default=[3.0, 4.0, 5.5, 7.5])
    p.add_argument("--speedups", default=None, help=SPEEDUPS_HELP)
    p.add_argument("--n-per-form", type=int, default=24)
    classes.add_arguments(add("classes", classes.task, "unconditional + class-conditional models: class "
                                                    "accuracy, objects, FID"))
    zoo_vs_hub.add_arguments(add("zoo-vs-hub", zoo_vs_hub.task, "an original checkpoint vs its hub copy"))
    semantic.add_arguments(add("semantic", semantic.task, "semantic model: region agreement at sizes, FID"))
    inpaint_rect.add_arguments(add("inpaint-rect", inpaint_rect.task, "one object of two under a padded "
                                                                      "rectangle, white-filled (issue 31)"))
    add_model_evaluations(add)
    a = parser.parse_args(argv)
    torch.set_num_threads(a.threads)
    a.fn(a)


def add_model_evaluations(add) -> None:
    """Each registered task's model evaluations (ldm_core.tasks), in the tasks' order."""
    evaluations = {"text2img": [("text2img", task_text2img)], "layout2img": [("layout2img", task_layout2img)],
                   "inpaint": [("inpaint", task_inpaint), ("inpaint-wide", task_inpaint_wide)],
                   "superres": [("superres", task_superres)]}
    for name, fn in (e for task in TASKS for e in evaluations.get(task, ())):
        p = add(name, fn, f"evaluate a {name} model from the catalog")
        p.add_argument("--model", required=True, help="catalog model name")
        p.add_argument("--catalog", default=None, help="catalog file (default: models/catalog.toml)")
        p.add_argument("--steps", type=int, default=25, help="sampling steps")
        p.add_argument("--speedups", default=None, help=SPEEDUPS_HELP)
        if name == "inpaint-wide":   # every mask style and prompt kind, stratified
            p.add_argument("--n-scenes", type=int, default=24, help="held-out scenes (the caption forms in turn)")
            p.add_argument("--seeds", type=int, default=1, help="generation seeds per case")
            continue
        p.add_argument("--seed", type=int, default=0, help="first generation seed")
        if name == "text2img":
            p.add_argument("--n-per-form", type=int, default=50)
            p.add_argument("--plan-layout", default="", choices=["", "on", "off"],
                           help="the layout stage (compositions/grounded.py): on, off, or \"\" = the model's own "
                                "(as the service runs it)")
        else:
            p.add_argument("--n", type=int, default=100)
        if name == "layout2img":
            p.add_argument("--size", type=int, nargs="+", default=None,
                           help="canvas sides to compare on the same layouts and seeds, e.g. 64 128 256 "
                                "(judged after a box-filter downsample to 64², no FID)")
        if name == "superres":
            p.add_argument("--n-photos", type=int, default=64, help="held-out photo crops")
            p.add_argument("--no-large", action="store_true", help="skip the 256² -> 1024² timing")


if __name__ == "__main__":
    main()
