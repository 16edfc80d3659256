"""Real-size CPU benchmark (issue #28): three of the catalog's hub models at their catalog
defaults on 2 threads, the studio side by side with diffusers' own pipeline and OpenVINO.

    python bench/run.py --sections cpu-real             # full size (an hour or more on 2 cores)
    python bench/run.py --smoke --sections cpu-real     # tiny mirrors, 2 steps (the same code path)
    python bench/cpu_real.py [--scale tiny] [--models stable-diffusion-inpainting]

Each model runs in a fresh process on a random-weight mirror of its hub repository at the
published configuration (bench/hub.py, ldm_core.hub_mirror; speed does not depend on weight
values). Rows per model, each the median seconds per image of n runs after a first call
(reported apart):

- studio          ModelStack at the catalog's defaults (steps, sampler, guidance; the model's
                  and machine's default speed-ups, `info["speedups"]`);
- studio exact    the same request with speedups="none"; then one row per single speed-up
                  (deepcache, bf16) where it differs from both. Every studio row: its largest
                  pixel difference (0-255) from the studio-exact image of the same seed;
- plain diffusers diffusers' reference pipeline (LDMTextToImagePipeline, LDMSuperResolutionPipeline,
                  StableDiffusionInpaintPipeline), eager fp32, loaded from the same mirror, with
                  the scheduler, steps, guidance, size and seed the studio ran; for the paper's
                  text-to-image model also at 50 DDIM steps (the paper README's protocol) when
                  the catalog's default differs from it;
- OpenVINO        that pipeline with its UNet converted (openvino.convert_model, static shapes:
                  batch incl. the guidance doubling, latent size, text length) and compiled for
                  the CPU on 2 threads at OpenVINO's default precision for this CPU; conversion
                  and compile time apart; largest pixel difference from the plain-diffusers image.

The studio's super-resolution also projects back onto its input (5 iterations by default) and
its inpainting keeps the unmasked pixels: work diffusers' pipelines do not do.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import os
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(1, str(BENCH.parent))
import hub  # noqa: E402

MODELS = {  # catalog name -> diffusers' reference pipeline for it
    "ldm-text2im-large-256": "LDMTextToImagePipeline",
    "ldm-super-resolution-4x-openimages": "LDMSuperResolutionPipeline",
    "stable-diffusion-inpainting": "StableDiffusionInpaintPipeline",
}
THREADS = 2
SLOW_S = 60.0                  # a row whose first call takes longer is timed once more, not twice
SMOKE_STEPS = 2
SMOKE_SIDE = {"text2img": 64, "superres": 32, "inpaint": 64}   # tiny scale: input sides (the code path only)
PAPER = (50, "DDIM")           # the paper README's text-to-image protocol: 50 DDIM steps (eta 0)
SINGLE_SPEEDUPS = ("deepcache", "bf16")
CPU_FLAGS = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "amx_int8")


def bench_run():
    import run   # bench/run.py: stats, fmt, repeat, machine (imported here: run.py imports this module)
    return run


# ------------------------------------------------------------------ measuring
def say(*a) -> None:
    """Progress on stderr (a child's stderr shows as it runs)."""
    print(*a, file=sys.stderr, flush=True)


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def measure(fn, n_min: int, n_max: int, budget_s: float, first: tuple[float, object] | None = None
            ) -> tuple[dict, object]:
    """A first call (timed apart; `first`: one made already), then n_min..n_max timed calls within
    budget_s (one when the first took over SLOW_S: a full run stays near an hour); the last output."""
    B = bench_run()
    first, out = first or timed(fn)
    n_min = 1 if first > SLOW_S else n_min
    outs = [out]
    times = B.repeat(lambda: outs.append(fn()), n_min, n_max, budget_s)
    return {"first_s": first, "times": times, **B.stats(times)}, outs[-1]


def row(label: str, fn, n_min: int, opts: dict, first=None, **fields) -> tuple[dict, object]:
    """One table row: `fn` measured (at least `n_min` timed calls at full scale, one at tiny)."""
    n_min = n_min if opts["scale"] == "full" else 1
    m, out = measure(fn, n_min, opts["repeats"], opts["budget"], first)
    say(f"  {label}: {bench_run().fmt(m, digits=2)}, first call {m['first_s']:.2f} s")
    return {"row": label, **fields, **m}, out


def max_diff(a, b) -> int:
    """Largest difference of any pixel channel of two images (0-255)."""
    import numpy as np
    a, b = np.asarray(a.convert("RGB"), np.int16), np.asarray(b.convert("RGB"), np.int16)
    return int(np.abs(a - b).max()) if a.shape == b.shape else 255


def cpu_flags() -> dict:
    flags: set[str] = set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {f: f in flags for f in CPU_FLAGS}


def machine() -> dict:
    import openvino
    return {**bench_run().machine(), "flags": cpu_flags(), "openvino": openvino.__version__.split("-")[0],
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "threads": THREADS}


# ------------------------------------------------------------------ the studio
def studio_rows(name: str, stack, base, opts: dict) -> tuple[list[dict], dict]:
    """The studio rows of one model: default speed-ups, none, each single one; the default's info."""
    import torch
    has_field = "speedups" in {f.name for f in dataclasses.fields(base)}
    settings = [("studio", None), ("studio exact", "none")] if has_field else [("studio", None)]
    if has_field:
        settings += [(f"studio {s}", s) for s in SINGLE_SPEEDUPS]
    rows, images, infos = [], {}, {}
    for label, speedups in settings:
        req = dataclasses.replace(base, speedups=speedups) if has_field else base
        single = label.removeprefix("studio ") in SINGLE_SPEEDUPS
        try:
            first = timed(lambda r=req: stack.run(r))
            if single and first[1].info.get("speedups") in {r.get("speedups") for r in rows}:
                continue                                # a single speed-up that adds no row
            r, result = row(label, lambda r=req: stack.run(r), 1 if single else 2, opts, first, requested=speedups)
        except Exception as e:  # noqa: BLE001 - a studio row that fails is reported; the others still run
            say(f"  {label}: ERROR {type(e).__name__}: {e}")
            rows.append({"row": label, "requested": speedups, "error": f"{type(e).__name__}: {str(e)[:200]}"})
            continue
        rows.append({**r, "speedups": result.info.get("speedups", "(no field)"), "threads": torch.get_num_threads()})
        images[label], infos[label] = result.images[0], result.info
    ref = images.get("studio exact")
    for r in rows:
        if r["row"] in images and ref is not None:
            r["max_diff"], r["diff_from"] = max_diff(images[r["row"]], ref), "studio exact"
    if not has_field:
        rows[0]["note"] = "this studio's request has no `speedups` field: one studio row"
    if not infos:
        raise RuntimeError(f"{name}: every studio row failed: {rows[0]['error']}")
    return rows, infos.get("studio") or next(iter(infos.values()))


# ------------------------------------------------------------------ plain diffusers
def reference_pipeline(name: str):
    """diffusers' own pipeline for the model, its components read from the mirror as the
    studio reads them (same files, same weight variant), in float32, nothing else applied."""
    import inspect

    import diffusers
    import torch

    from ldm_core.catalog import Catalog
    from ldm_core.hub import SKIP_COMPONENTS
    from ldm_core.loading import component_class, load_component, model_folder
    catalog = Catalog.load()
    root, variants = model_folder(catalog, catalog.entries[name], False, allow_downloads=False)
    cls = getattr(diffusers, MODELS[name])
    wanted = set(inspect.signature(cls.__init__).parameters)
    parts = {}
    for comp, spec in json.loads((root / "model_index.json").read_text()).items():
        if comp in wanted and comp not in SKIP_COMPONENTS and isinstance(spec, list) and spec[0]:
            variant, pickled = variants.get(comp, (None, False))
            parts[comp] = load_component(component_class(*spec), root, comp, torch.float32, variant, pickled)
    if "safety_checker" in wanted:
        parts.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = cls(**parts)
    pipe.set_progress_bar_config(disable=True)
    pipe.published_scheduler = dict(pipe.scheduler.config)
    return pipe


def reference_call(pipe, req, setting: dict):
    """One image from diffusers' pipeline: the studio request's inputs at `setting` (steps,
    sampler, guidance, width, height), seed 0; a fresh scheduler each call, as the studio makes."""
    import torch

    from ldm_core.pipelines.common import make_scheduler
    pipe.scheduler = make_scheduler(pipe.published_scheduler, setting["sampler"])
    kw = dict(num_inference_steps=setting["steps"], generator=torch.Generator("cpu").manual_seed(req.seed))
    if MODELS[req.model] == "LDMSuperResolutionPipeline":
        return pipe(image=req.image, eta=0.0, **kw).images[0]
    kw.update(height=setting["height"], width=setting["width"], guidance_scale=setting["guidance"])
    if MODELS[req.model] == "LDMTextToImagePipeline":
        return pipe(prompt=req.prompt, eta=0.0, **kw).images[0]
    return pipe(prompt=req.prompt, image=req.image, mask_image=req.mask, **kw).images[0]


def record_first_call(unet) -> dict:
    """The UNet's inputs at its first call (sample, timestep, text): the static shapes for OpenVINO."""
    seen: dict = {}

    def hook(module, args, kwargs):
        if not seen:
            vals = [*args, *(kwargs[k] for k in ("sample", "timestep") if k in kwargs)]
            ctx = kwargs.get("encoder_hidden_states", args[2] if len(args) > 2 else None)
            seen["inputs"] = [v.detach().clone() for v in (vals[0], vals[1], ctx) if v is not None]
            handle.remove()
    handle = unet.register_forward_pre_hook(hook, with_kwargs=True)
    return seen


# ------------------------------------------------------------------ OpenVINO
class OVUNet:
    """A UNet compiled by OpenVINO as diffusers' pipelines use one: `.config`, `.dtype`, `.device`,
    `parameters()` (its dtype), and a call returning `.sample` (a tuple with return_dict=False)."""

    def __init__(self, compiled, config, example):
        import torch
        self.compiled, self.config, self.request = compiled, config, compiled.create_infer_request()
        self.dtype, self.device = torch.float32, torch.device("cpu")
        self.shapes = [tuple(x.shape) for x in example]

    def parameters(self):
        import torch
        yield torch.zeros((), dtype=self.dtype)

    def __call__(self, sample, timestep, encoder_hidden_states=None, return_dict=True, **_):
        import numpy as np
        import torch
        t = np.asarray(timestep.cpu() if torch.is_tensor(timestep) else timestep, np.float32)
        feeds = [sample.float().contiguous().numpy(), np.array(np.broadcast_to(t, self.shapes[1]))]
        if encoder_hidden_states is not None:
            feeds.append(encoder_hidden_states.float().contiguous().numpy())
        out = torch.from_numpy(np.array(self.request.infer(feeds)[self.compiled.output(0)]))
        return SimpleNamespace(sample=out) if return_dict else (out,)


def to_openvino(unet, example: list) -> tuple[OVUNet, dict]:
    """`unet` converted with static input shapes and compiled for the CPU on THREADS threads, at
    OpenVINO's default precision; the adapter and {convert_s, compile_s, precision}."""
    import openvino as ov
    import torch

    class Traced(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, *context):
            return self.unet(sample, timestep, *context, return_dict=False)[0]

    example = [example[0], example[1].float(), *example[2:]]   # the timestep as float: any sampler's
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")             # the tracer's notes on shape-dependent branches
        model = ov.convert_model(Traced(), example_input=tuple(example),
                                 input=[(list(x.shape), ov.Type.f32) for x in example])
    t1 = time.perf_counter()
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": THREADS})
    t2 = time.perf_counter()
    del model
    precision = compiled.get_property("INFERENCE_PRECISION_HINT")
    return OVUNet(compiled, unet.config, example), {
        "convert_s": t1 - t0, "compile_s": t2 - t1, "precision": getattr(precision, "get_type_name", str)(),
        "ov_threads": int(compiled.get_property("INFERENCE_NUM_THREADS")),
        "input_shapes": [list(x.shape) for x in example]}


def reference_rows(name: str, req, setting: dict, opts: dict) -> list[dict]:
    """Plain diffusers at the studio's setting (and the paper's protocol), then with OpenVINO."""
    import torch
    torch.set_num_threads(THREADS)
    pipe = reference_pipeline(name)
    seen = record_first_call(pipe.unet)
    r, plain = row("plain diffusers", lambda: reference_call(pipe, req, setting), 2, opts, **setting)
    rows = [{**r, "scheduler": type(pipe.scheduler).__name__}]
    text2im = MODELS[name] == "LDMTextToImagePipeline"
    if text2im and (setting["steps"], setting["sampler"]) == PAPER:
        rows[0]["note"] = f"also the paper's protocol ({PAPER[0]} {PAPER[1]} steps)"
    elif text2im:
        # tiny scale: one step, to run the code path
        paper = {**setting, "steps": PAPER[0] if opts["scale"] == "full" else 1, "sampler": PAPER[1]}
        rows.append(row(f"plain diffusers, {paper['steps']} {PAPER[1]} steps (the paper's protocol: {PAPER[0]})",
                        lambda: reference_call(pipe, req, paper), 2, opts, **paper)[0])
    unet = pipe.unet
    ov_unet, conv = to_openvino(unet, seen["inputs"])
    pipe.unet = ov_unet
    del unet
    gc.collect()
    say(f"  OpenVINO: converted in {conv['convert_s']:.1f} s, compiled in {conv['compile_s']:.1f} s "
        f"({conv['precision']})")
    r, image = row("OpenVINO", lambda: reference_call(pipe, req, setting), 2, opts, **setting, **conv)
    rows.append({**r, "max_diff": max_diff(image, plain), "diff_from": "plain diffusers"})
    return rows


# ------------------------------------------------------------------ one model, in a fresh process
def child(name: str, cache: str, device: str, options: str) -> dict:
    import torch
    opts = json.loads(options)
    load_start = os.getloadavg()[0]            # other work on the machine: noisy figures, a governor at work
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)            # before the stack: its CPU governor never exceeds this
    try:
        hub.use_cache(cache)
        from ldm_core.catalog import Catalog
        from ldm_core.stack import ModelStack
        stack = ModelStack(Catalog.load(), device="cpu")
        t0 = time.perf_counter()
        stack.load(name)
        load_s = time.perf_counter() - t0
        say(f"{name}: loaded in {load_s:.1f} s")
        task, size = hub.NATIVE[name]
        if opts["scale"] == "tiny":   # small images too: a tiny model's time goes to its autoencoder at 512²
            base = hub.request(task, SMOKE_SIDE[task], name, SMOKE_STEPS)
            if task == "text2img":
                base = dataclasses.replace(base, width=SMOKE_SIDE[task], height=SMOKE_SIDE[task])
        else:
            base = hub.request(task, size, name, steps=None)
        rows, info = studio_rows(name, stack, base, opts)
        del stack
        gc.collect()
        w, h = (int(v) for v in info["size"].split("x"))
        setting = {"steps": info["steps"], "sampler": info["sampler"], "guidance": info.get("guidance_scale"),
                   "width": w, "height": h}
        rows += reference_rows(name, base, setting, opts)
    finally:
        torch.set_num_threads(threads)
    plain = rows[next(i for i, r in enumerate(rows) if r["row"] == "plain diffusers")]["median"]
    for r in rows:
        if "median" in r:
            r["vs_plain"] = plain / r["median"]
            r["step_s"] = r["median"] / r.get("steps", setting["steps"])
    return {"model": name, "task": task, "scale": opts["scale"], "load_s": load_s, "setting": setting,
            "loadavg_1min": [load_start, os.getloadavg()[0]],
            "scheduler": info["scheduler"], "rows": rows}


# ------------------------------------------------------------------ tables
def table(r: dict) -> list[str]:
    B = bench_run()
    s = r["setting"]
    what = "full published configuration" if r["scale"] == "full" else "TINY widths (smoke run, not a measurement)"
    lines = [f"#### `{r['model']}` ({r['task']}, {s['width']}×{s['height']}, {s['steps']} steps {s['sampler']} "
             f"({r['scheduler']}), guidance {s['guidance']}; {what}, random weights, {THREADS} threads)",
             *([f"(a busy machine: 1-min load average {r['loadavg_1min'][0]:.1f} at the start, "
                f"{r['loadavg_1min'][1]:.1f} at the end; the figures are not a clean measurement)"]
               if max(r["loadavg_1min"]) > 1.0 else []),
             "", "| row | s/image | first call | s/step | × vs plain diffusers | max pixel diff | notes |",
             "|---|---|---|---|---|---|---|"]
    for x in r["rows"]:
        if "error" in x:
            lines.append(f"| {x['row']} | error: {x['error']} | – | – | – | – | speed-ups asked: {x['requested']} |")
            continue
        if x["row"].startswith("studio"):
            note = f"speed-ups: {x['speedups']}" + (f"; {x['note']}" if x.get("note") else "") + (
                f"; the studio's CPU governor left it {x['threads']} threads (a busy machine)"
                if x.get("threads", THREADS) < THREADS else "")
        elif x["row"] == "OpenVINO":
            note = (f"{x['precision']}, {x['ov_threads']} threads; convert {x['convert_s']:.1f} s + compile "
                    f"{x['compile_s']:.1f} s (not in s/image); inputs {x['input_shapes']}")
        else:
            note = f"eager fp32, {x.get('scheduler', x['sampler'])}, {x['steps']} steps" + (
                f"; {x['note']}" if x.get("note") else "")
        diff = "–" if x.get("max_diff") is None else f"{x['max_diff']} (vs {x['diff_from']})"
        first = "–" if x.get("first_s") is None else f"{x['first_s']:.2f} s"
        lines.append(f"| {x['row']} | {B.fmt(x, digits=2)} | {first} | {x['step_s']:.3f} s | {x['vs_plain']:.2f}× | "
                     f"{diff} | {note} |")
    return lines + [""]


def machine_line(m: dict) -> str:
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in m["flags"].items())
    return (f"Machine: {m['cpu']}, {m.get('cores_usable', m['cpu_count'])} cores ({flags}); {THREADS} threads; "
            f"torch {m['torch']}, diffusers {m.get('diffusers')}, openvino {m['openvino']}; {m['date']}")


def run(models: list[str], scale: str = "full", in_process: bool = False, repeats: int = 3, budget: float = 6.0,
        log=print) -> tuple[dict, list[str]]:
    """Each model on its mirror (a fresh process unless `in_process`); its table logged as it finishes."""
    m = machine()
    lines = [machine_line(m), ""]
    log(lines[0])
    opts = json.dumps({"scale": scale, "repeats": max(2, repeats), "budget": budget})
    rows = []
    for r in hub.on_mirrors(models, scale, "cpu", in_process, log, child, __file__, opts, live=True):
        rows.append(r)
        t = table(r)
        log("\n".join(t))
        lines += t
    return {"machine": m, "models": rows}, lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=["full", "tiny"], default="full")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--repeats", type=int, default=3, help="most timed runs per row (at least 2)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(*a.child), default=str), flush=True)
        return
    data, _ = run(a.models.split(","), a.scale, repeats=a.repeats)
    if a.out:
        Path(a.out).write_text(json.dumps(data, indent=1, default=str))


if __name__ == "__main__":
    main()
