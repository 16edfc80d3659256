"""Every task from the command line (one command per `ldm_core.tasks` module, its options
from the task's request dataclass), writing PNGs that carry their parameters (as the paper's
own `txt2img.py` and `inpaint.py` scripts do).

    python -m ldm_core text2img "a red circle left of a blue square" --num-images 4 --seed 1
    python -m ldm_core layout2img --boxes '[{"label": "red circle", "box": [0.1, 0.1, 0.4, 0.4]}]'
    python -m ldm_core superres photo.png
    python -m ldm_core inpaint image.png mask.png --prompt "a green square"
    python -m ldm_core img2img image.png --prompt "a blue square" --strength 0.6
    python -m ldm_core xyplot "a red circle" --x-axis guidance_scale --x-values "1, 4, 8" --y-axis seed --y-values 1,2
    python -m ldm_core models            # the catalog, with availability
    python -m ldm_core unconditional --model celeba256 --num-images 4 --seed 1
    python -m ldm_core class2img "goldfish; tabby cat" --model cin256-v2 --num-images 2
    python -m ldm_core download ldm-super-resolution-4x-openimages   # or --all: fetch hub models now
    python -m ldm_core download celeba256 kl-f8   # the paper's original checkpoints, converted once
    python -m ldm_core convert model.ckpt --config config.yaml --name my-ldm   # a checkpoint you have
    python -m ldm_core watermark a.png   # was it made here? (metadata label and invisible watermark)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import typing
from pathlib import Path

from tqdm.auto import tqdm

from . import hub, zoo
from .catalog import Catalog
from .compositions import COMPOSITIONS
from .loading import ModelLoadError
from .provenance import is_ai_generated, read_parameters, read_watermark
from .requests import RequestError, load_image
from .service import Service
from .stack import ModelStack
from .tasks import TASKS
from .zoo.convert import convert_checkpoint
from .zoo.download import download as download_zoo

UNSET_HELP = {"model": "default: the task's default model (see `python -m ldm_core models`)",
              "hires_model": "default: the catalog's default super-resolution model"}


def _add_task(sub, task, name: str | None = None, help: str | None = None) -> argparse.ArgumentParser:
    """A subcommand whose options are the task's request fields: positional ones as arguments,
    the rest as --options (None: the model's default), booleans as --x/--no-x."""
    p = sub.add_parser(name or task.name, help=help or task.help)
    hints = typing.get_type_hints(task.request)
    for f in dataclasses.fields(task.request):
        t = hints[f.name]
        if f.name in task.positional:     # optional when the field has a default (inpaint's mask, outpainting)
            p.add_argument(f.name, nargs="?" if f.default is None else None,
                           help="an image file" if f.name in ("image", "mask") else None)
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        flag = "--" + f.name.replace("_", "-")
        if t is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            base = next((k for k in (int, float) if t is k or k in typing.get_args(t)), str)
            p.add_argument(flag, type=base, default=default if not isinstance(default, list) else None,
                           help=UNSET_HELP.get(f.name, "default: the model's") if default is None else None)
    return p


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ldm_core", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=None, help="catalog file (default models/catalog.toml)")
    p.add_argument("--device", default="auto")
    p.add_argument("--outdir", default="outputs/cli")
    sub = p.add_subparsers(dest="task", required=True)
    for task in TASKS.values():
        _add_task(sub, task)
    for comp in COMPOSITIONS.values():
        if comp.request is None:       # it rides on its tasks' own options (--hires)
            continue
        cp = _add_task(sub, TASKS[comp.tasks[0]], comp.name, comp.help)
        for o in comp.options:
            cp.add_argument("--" + o.name.replace("_", "-"), type=o.type, default=o.default,
                            help=f"{o.help} (default {o.default!r})" if o.help else None)
    sub.add_parser("models")
    dl = sub.add_parser("download", help="fetch hub models, or the paper's original checkpoints (converted once), "
                                         "now (for offline use, or a Space's start-up)")
    dl.add_argument("names", nargs="*", help="catalog names of hub models, or zoo names: " + ", ".join(zoo.ZOO))
    dl.add_argument("--all", action="store_true", help="every hub model of the catalog")
    dl.add_argument("--fp16", action="store_true", help="the fp16 weights, as a CUDA device loads them")
    dl.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                    help="zoo: the EMA weights (model_ema.*) or not; default: what CompVis' scripts sample with "
                         "(the EMA copy where the checkpoint has one)")
    cv = sub.add_parser("convert", help="convert an original CompVis latent-diffusion checkpoint you have "
                                        "(read safely, saved as safetensors; it then appears among the models)")
    cv.add_argument("checkpoint", help="the .ckpt file")
    cv.add_argument("--config", required=True, help="its config.yaml (as in CompVis/latent-diffusion)")
    cv.add_argument("--name", default=None, help="its name among the models (default: the checkpoint's folder)")
    cv.add_argument("--ema", action=argparse.BooleanOptionalAction, default=None,
                    help="the EMA weights (model_ema.*) or not; default: the EMA copy where there is one")
    wm = sub.add_parser("watermark", help="read the AI-generated label, parameters and invisible watermark")
    wm.add_argument("images", nargs="+")
    return p


def make_request(a: argparse.Namespace):
    """The request of the chosen task or composition from the parsed arguments (unset options left
    to the model)."""
    comp = COMPOSITIONS.get(a.task)
    task = TASKS[comp.tasks[0] if comp else a.task]
    values = {f.name: getattr(a, f.name) for f in dataclasses.fields(task.request)}
    req = task.request(**{k: v for k, v in values.items() if v is not None})
    if comp is None:
        return req
    return comp.build(req, {o.name: getattr(a, o.name) for o in comp.options})


def show_provenance(paths) -> int:
    """One line per image: the watermark, the AI-generated label, the parameters. Exit 1 when
    any image carries no watermark."""
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


def download(catalog, names: list[str], everything: bool, fp16: bool, ema: bool | None = None) -> int:
    """Fetch exactly the files each named hub model needs, or a zoo model's original checkpoint
    (then converted once); say the size before each download."""
    hub_models = [e for e in catalog.entries.values() if e.is_hub]
    if everything:
        names = [e.name for e in hub_models]
    if not names:
        print("name hub models or zoo checkpoints to download, or --all (every hub model): "
              + ", ".join([e.name for e in hub_models] + list(zoo.ZOO)), file=sys.stderr)
        return 2
    failed = 0
    for name in names:
        entry = catalog.entries.get(name)
        zoo_name = entry.zoo_name if entry is not None and entry.is_zoo else name
        if zoo_name in zoo.ZOO:
            try:
                print(f"{name}: ready in {download_zoo(zoo_name, progress=print, ema=ema)}")
            except Exception as e:
                print(f"{name}: could not be downloaded and converted: {str(e) or type(e).__name__}",
                      file=sys.stderr)
                failed += 1
            continue
        if entry is None or not entry.is_hub:
            print(f"{name}: not a hub model of the catalog nor a zoo checkpoint "
                  f"({', '.join([e.name for e in hub_models] + list(zoo.ZOO))})", file=sys.stderr)
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


def convert(checkpoint: str, config: str, name: str | None, ema: bool | None) -> int:
    """Convert a checkpoint the user has into the zoo folder, where the catalog finds it."""
    name = name or Path(checkpoint).resolve().parent.name
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        print(f"--name {name[:70]!r}: use letters, digits, '.', '_' and '-' (at most 64)", file=sys.stderr)
        return 2
    try:
        folder = convert_checkpoint(checkpoint, config, name, ema=ema)
    except Exception as e:   # refused (unsafe or unconvertible), unreadable, bad config
        print(f"{checkpoint}: not converted: {str(e) or type(e).__name__}", file=sys.stderr)
        return 2
    print(f"{name}: converted to {folder}; it is now among the models (`python -m ldm_core models`)")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.task == "watermark":
        return show_provenance(args.images)
    if args.task == "convert":
        return convert(args.checkpoint, args.config, args.name, args.ema)
    catalog = Catalog.load(args.models)
    if args.task == "download":
        return download(catalog, args.names, args.all, args.fp16, args.ema)
    if args.task == "models":
        for task in TASKS:
            for label, _ in catalog.choices(task, prefer_fp16=args.device.startswith("cuda")):
                print(f"{task:11s} {label}")
        return 0
    service = Service(ModelStack(catalog, device=args.device, output_dir=args.outdir))
    bar = tqdm(desc=args.task, unit="step")

    def on_step(s):
        bar.total = s.total
        bar.n = s.step
        bar.refresh()

    try:
        result = service.run(make_request(args), callback=on_step)
    except (RequestError, ModelLoadError) as e:
        bar.close()
        print(f"error: {e}", file=sys.stderr)
        return 2
    bar.close()
    for path in service.save(result):
        print(path)
    print(json.dumps(result.info), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
