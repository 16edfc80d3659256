"""The four tasks from the command line, writing PNGs that carry their parameters
(as the paper's own `txt2img.py` and `inpaint.py` scripts do).

    python -m ldm_core text2img "a red circle left of a blue square" --num-images 4 --seed 1
    python -m ldm_core layout2img --boxes '[{"label": "red circle", "box": [0.1, 0.1, 0.4, 0.4]}]'
    python -m ldm_core superres photo.png
    python -m ldm_core inpaint image.png mask.png --prompt "a green square"
    python -m ldm_core models            # the catalog, with availability
    python -m ldm_core download ldm-super-resolution-4x-openimages   # or --all: fetch hub models now
    python -m ldm_core watermark a.png   # was it made here? (metadata label and invisible watermark)
"""
from __future__ import annotations

import argparse
import json
import sys

from tqdm.auto import tqdm


def _sampling(p: argparse.ArgumentParser, size: bool = True) -> None:
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--steps", type=int, default=None, help="default: the model's")
    p.add_argument("--guidance-scale", type=float, default=None, help="default: the model's")
    p.add_argument("--seed", type=int, default=-1, help="-1: random; image i gets seed + i")
    p.add_argument("--num-images", type=int, default=1)
    if size:
        p.add_argument("--width", type=int, default=None)
        p.add_argument("--height", type=int, default=None)
    p.add_argument("--sampler", default=None)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ldm_core", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=None, help="catalog file (default models/catalog.toml)")
    p.add_argument("--device", default="auto")
    p.add_argument("--outdir", default="outputs/cli")
    sub = p.add_subparsers(dest="task", required=True)
    t = sub.add_parser("text2img")
    t.add_argument("prompt")
    t.add_argument("--model", default=None)
    _sampling(t)
    lay = sub.add_parser("layout2img")
    lay.add_argument("--prompt", default="")
    lay.add_argument("--boxes", required=True, help='JSON: [{"label": "red circle", "box": [x0, y0, x1, y1]}]')
    lay.add_argument("--model", default=None)
    _sampling(lay)
    sr = sub.add_parser("superres")
    sr.add_argument("image")
    sr.add_argument("--model", default=None)
    sr.add_argument("--steps", type=int, default=None)
    sr.add_argument("--seed", type=int, default=-1)
    inp = sub.add_parser("inpaint")
    inp.add_argument("image")
    inp.add_argument("mask", help="white = repaint, black = keep")
    inp.add_argument("--prompt", default="")
    inp.add_argument("--model", default=None)
    _sampling(inp)
    sub.add_parser("models")
    dl = sub.add_parser("download", help="fetch hub models now (for offline use, or a Space's start-up)")
    dl.add_argument("names", nargs="*", help="catalog names of hub models")
    dl.add_argument("--all", action="store_true", help="every hub model of the catalog")
    dl.add_argument("--fp16", action="store_true", help="the fp16 weights, as a CUDA device loads them")
    wm = sub.add_parser("watermark", help="read the AI-generated label, parameters and invisible watermark")
    wm.add_argument("images", nargs="+")
    return p


def make_request(a: argparse.Namespace):
    from .requests import InpaintRequest, Layout2ImgRequest, SuperResRequest, Text2ImgRequest
    common = dict(steps=a.steps, seed=a.seed, model=a.model)
    if a.task == "superres":
        return SuperResRequest(image=a.image, **common)
    common.update(guidance_scale=a.guidance_scale, num_images=a.num_images, sampler=a.sampler,
                  negative_prompt=a.negative_prompt)
    if a.task == "text2img":
        return Text2ImgRequest(prompt=a.prompt, width=a.width, height=a.height, **common)
    if a.task == "layout2img":
        return Layout2ImgRequest(prompt=a.prompt, boxes=a.boxes, width=a.width, height=a.height, **common)
    return InpaintRequest(image=a.image, mask=a.mask, prompt=a.prompt, width=a.width, height=a.height, **common)


def show_provenance(paths) -> int:
    """One line per image: the watermark, the AI-generated label, the parameters. Exit 1 when
    any image carries no watermark."""
    from .provenance import is_ai_generated, read_parameters, read_watermark
    from .requests import RequestError, load_image
    missing = 0
    for path in paths:
        try:
            image = load_image(path, what=str(path))
        except RequestError as e:
            print(f"{path}: {e}")
            missing += 1
            continue
        mark = read_watermark(image)
        missing += not mark.found
        params = read_parameters(path)
        label = "AI-generated label" if is_ai_generated(path) else "no AI-generated label"
        print(f"{path}: {'watermark ' + mark.mark if mark.found else 'no watermark'} ({mark.matched}/32 bits), "
              f"{label}, {'parameters: ' + json.dumps(params) if params else 'no parameters'}")
    return 1 if missing else 0


def download(catalog, names: list[str], everything: bool, fp16: bool) -> int:
    """Fetch exactly the files each named hub model needs; say the size before each download."""
    from . import hub
    hub_models = [e for e in catalog.entries.values() if e.is_hub]
    if everything:
        names = [e.name for e in hub_models]
    if not names:
        print("name hub models to download, or --all: " + ", ".join(e.name for e in hub_models), file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        entry = catalog.entries.get(name)
        if entry is None or not entry.is_hub:
            print(f"{name}: not a hub model of the catalog ({', '.join(e.name for e in hub_models)})",
                  file=sys.stderr)
            failed += 1
            continue
        try:
            plan = hub.model_plan(entry.repo_id, entry.revision, fp16, pickle_weights=entry.pickle_weights)
            todo = hub.missing(plan)
            print(f"{name}: {entry.repo_id}@{entry.revision[:12]}, {len(plan.files)} files, "
                  f"{hub.gigabytes(plan.total_bytes)}; to download: {hub.gigabytes(sum(todo.values()))}", flush=True)
            print(f"{name}: ready in {hub.fetch(plan)}")
        except Exception as e:
            print(f"{name}: could not be downloaded: {str(e) or type(e).__name__}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from .catalog import Catalog
    from .requests import RequestError
    from .stack import ModelLoadError, ModelStack
    if args.task == "watermark":
        return show_provenance(args.images)
    catalog = Catalog.load(args.models)
    if args.task == "download":
        return download(catalog, args.names, args.all, args.fp16)
    if args.task == "models":
        for task in ("text2img", "layout2img", "superres", "inpaint"):
            for label, _ in catalog.choices(task, prefer_fp16=args.device.startswith("cuda")):
                print(f"{task:11s} {label}")
        return 0
    stack = ModelStack(catalog, device=args.device, output_dir=args.outdir)
    bar = tqdm(desc=args.task, unit="step")

    def on_step(s):
        bar.total = s.total
        bar.n = s.step
        bar.refresh()

    try:
        result = stack.run(make_request(args), callback=on_step)
    except (RequestError, ModelLoadError) as e:
        bar.close()
        print(f"error: {e}", file=sys.stderr)
        return 2
    bar.close()
    for path in stack.save(result):
        print(path)
    print(json.dumps(result.info), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
