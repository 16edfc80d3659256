"""Speed and memory of the studio, measured (issue #5: benchmarks, not timed unit tests).

    python bench/run.py                 # the full suite on this machine (< 15 min on 2 CPU cores)
    python bench/run.py --smoke         # one tiny case of each benchmark (CI, < 1 min)
    python bench/run.py --sections hub  # the catalog's hub models at full size (not in the default run)
    python bench/run.py --sections cpu-real   # three hub models at full size on 2 threads: studio, diffusers,
                                              # OpenVINO (issue #28; not in the default run, its smoke case is)
    python bench/run.py --gpu-only      # only the real-size GPU cases (< 5 min on an H100; no gradio needed)
    python bench/run.py --sections latency,overhead   # a subset

Prints markdown tables as each section finishes and writes bench/results-<device>.json after
each one. Every figure is the median of several runs with its spread (min-max). Sections:

- latency    built-in models, the four tasks, s/image at each model's default steps (guided where
             the task has guidance), batch 1 and 4, images/s;
- overhead   the studio's pipeline (ModelStack.run) against a bare denoising loop over the same
             UNet, scheduler, inputs and guidance (same image out), as a ratio; also with the web
             UI's live previews, and what the CPU defaults buy (small convolutions, threads);
- resident   a fresh process: time to the first image after start against later images; memory
             after using one task against all four (shared components counted once);
- webui      `python webui.py` launched as a subprocess, to the first built-in image through
             gradio_client, and a later request;
- request    one request's path through the server per task and client, in its legs, against the
             pipeline alone (bench/serving.py);
- contention s/image while 0, 1, 2, 4 CPU-bound processes compete, against the fair share, with
             the studio's thread governor (ldm_core/cpu.py) and with the thread count fixed;
- predict    the server's time prediction (ldm_core/throughput.py) for text->image at growing
             sizes against the run;
- superres   a 256² input to a 1024² output through the studio's tiled super-resolution, time
             and peak RSS in a fresh process;
- memory     real-size architectures (random weights): peak memory of one guided UNet step with
             attention slicing off / on / the studio's auto / unfused attention, and SD-1.5 VAE
             decodes (512², 1024² whole / tiled, batch of 4 whole / sliced), each in a fresh
             process (peak RSS on CPU), with the time of each;
- cpu-real   (only when named; its tiny case joins --smoke) bench/cpu_real.py: the paper's text->image
             LDM, LDM-SR and SD-inpainting at full size and catalog defaults on 2 CPU threads, the
             studio (default speed-ups, none, each one) against diffusers' own pipeline and that
             pipeline with an OpenVINO UNet, s/image and the largest pixel difference;
- gpu        (CUDA only) bench/gpu.py: fp16/bf16, SDPA/sliced, channels-last, CUDA graph and
             torch.compile on the SD-1.5-sized UNet at 512², and the memory cases on the GPU.

--gpu-only imports nothing but torch, diffusers and the standard library.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(1, str(ROOT))
import realsize as R  # noqa: E402  (torch + diffusers only)
import serving  # noqa: E402  (the request path and a busy CPU; imports gradio's client only when run)

SECTIONS = ("latency", "overhead", "resident", "webui", "request", "contention", "predict", "superres", "memory",
            "gpu")
OPTIONAL_SECTIONS = ("hub", "cpu-real")   # run only when named: minutes, GBs of full-size mirrors (bench/hub.py)
SMOKE_ALSO = ("cpu-real",)    # optional sections whose tiny case is in the default --smoke run
PROMPT = "a red circle left of a blue square"


def log(*a) -> None:
    print(*a, flush=True)


def stats(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def fmt(s: dict, unit: str = "s", digits: int = 3) -> str:
    return f"{s['median']:.{digits}f} {unit} ({s['min']:.{digits}f}–{s['max']:.{digits}f}, n={s['n']})"


def repeat(fn, n_min: int, n_max: int, budget_s: float) -> list[float]:
    """Time fn() at least n_min and at most n_max times, stopping after budget_s."""
    times, start = [], time.perf_counter()
    while len(times) < n_max and (len(times) < n_min or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def machine() -> dict:
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    m = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
         "python": platform.python_version(), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}
    try:
        m["cores_usable"] = len(os.sched_getaffinity(0))
        m["loadavg_at_start"] = os.getloadavg()   # other work on the machine makes every figure noisy
    except (AttributeError, OSError):
        pass
    try:
        import diffusers
        m["diffusers"] = diffusers.__version__
    except Exception:  # noqa: BLE001
        pass
    if torch.cuda.is_available():
        m["gpu"] = torch.cuda.get_device_name()
    return m


def child_env(exact_memory: bool = False) -> dict:
    """Environment of measuring subprocesses: the repository importable. `exact_memory`: freed
    buffers over 64 KB go back to the OS at once (glibc), so that peak - before measures what a
    step really holds (it slows small models down: not for timings of the built-in ones)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(BENCH), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    if exact_memory:
        env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    return env


def run_child(name: str, args: list, timeout: float):
    """CHILDREN[name](*args) in a fresh process (`python bench/run.py --child ...`); its result."""
    p = subprocess.run([sys.executable, str(BENCH / "run.py"), "--child", name, json.dumps(args)],
                       capture_output=True, text=True, timeout=timeout, env=child_env(name == "memory"),
                       cwd=str(ROOT))
    if p.returncode != 0:
        lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()] or ["(no output)"]
        raise RuntimeError(f"subprocess failed: {lines[-1][:300]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ requests, from the task registry
def task_names() -> list[str]:
    """Every registered task (ldm_core.tasks), in order."""
    from ldm_core.tasks import TASKS
    return list(TASKS)


def side(task: str, size: int, sr_size: int) -> int:
    """The input side of a task that takes an image and enlarges it (`Task.scale`), else `size`."""
    from ldm_core.tasks import TASKS
    return sr_size if TASKS[task].scale > 1 else size


def make_request(task: str, batch: int, seed: int, steps: int, size: int):
    """The task's example request (`Task.example`): its own fields at `size` pixels (the input's,
    for a task that takes an image), with these sampling settings."""
    from ldm_core.tasks import TASKS
    return TASKS[task].request(**TASKS[task].example(size), steps=steps, seed=seed, num_images=batch)


# ------------------------------------------------------------------ latency
def bench_latency(ctx) -> tuple[dict, list[str]]:
    stack = ctx.stack()
    out, lines = {}, ["| task (model) | steps | first request (load + run) | s/image, batch 1 | s/image, batch 4 | "
                      "images/s, batch 1 / 4 |", "|---|---|---|---|---|---|"]
    for task in task_names():
        entry = stack.catalog.default(task)
        steps = ctx.steps if ctx.smoke else entry.steps     # each model's default (what a user gets)
        size = side(task, ctx.size, ctx.sr_size)
        t0 = time.perf_counter()
        stack.run(make_request(task, 1, 0, steps, size))
        first = time.perf_counter() - t0
        row = {"model": entry.name, "steps": steps, "first_s": first,
               "guided": task != "superres" and (entry.guidance or 0) > 1}
        for batch in (1, 4):
            seeds = iter(range(1, 1000))
            times = repeat(lambda: stack.run(make_request(task, batch, next(seeds), steps, size)),
                           2, ctx.repeats, ctx.budget * (1 if batch == 1 else 1.5))
            row[f"batch{batch}"] = stats([t / batch for t in times])
        out[task] = row
        note = "" if row["guided"] else ", no guidance"
        lines.append(f"| {task} ({entry.name}{note}) | {steps} | {first:.2f} s | {fmt(row['batch1'])} | "
                     f"{fmt(row['batch4'])} | {1 / row['batch1']['median']:.2f} / {1 / row['batch4']['median']:.2f} |")
        log(lines[-1])
    return out, lines


# ------------------------------------------------------------------ overhead
def bench_overhead(ctx) -> tuple[dict, list[str]]:
    import numpy as np
    import torch

    import ldm_core.device as D
    from ldm_core.pipelines.common import (
        apply_guidance,
        decode_latents,
        latent_channels,
        make_generators,
        make_scheduler,
        per_image_noise,
        to_pil,
    )
    from ldm_core.stack import ModelStack
    from ldm_core.tasks.text2img import Text2ImgRequest
    stack, steps = ctx.stack(), ctx.steps
    entry = stack.catalog.default("text2img")
    pipe = stack.load(entry)
    req = Text2ImgRequest(prompt=PROMPT, steps=steps, seed=7)

    @torch.inference_mode()
    def bare():
        """What one writes with the same parts and no studio: tokenize, encode [uncond; cond],
        the guided loop, decode, to PIL."""
        sched = make_scheduler(pipe.scheduler.config, entry.sampler)
        sched.set_timesteps(steps, device=pipe.device)
        ids = pipe.tokenizer(["", PROMPT], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(pipe.device)
        cond = pipe.text_encoder(ids)[0]
        f = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        lat = per_image_noise((1, latent_channels(pipe.vae), entry.height // f, entry.width // f),
                              make_generators([7]), pipe.device, cond.dtype) * sched.init_noise_sigma
        extra = pipe.unet.config.in_channels - lat.shape[1]   # the grounded UNet: an empty box map
        for t in sched.timesteps:
            x = sched.scale_model_input(torch.cat([lat] * 2), t)
            if extra:
                x = torch.cat([x, x.new_zeros(2, extra, *x.shape[2:])], 1)
            lat = sched.step(apply_guidance(pipe.unet(x, t, encoder_hidden_states=cond).sample, entry.guidance),
                             t, lat).prev_sample
        return to_pil(decode_latents(pipe.vae, lat))

    def studio():
        return stack.run(req).images

    def ui_callback(s):  # what a browser's job (ldm_core/jobs.py) does: a preview every 5 steps
        if s.step % 5 == 0 and s.step < s.total:
            stack.preview(entry.name, s.latents)
        return False

    def studio_ui():
        return stack.run(req, callback=ui_callback).images

    same = int(np.abs(np.asarray(bare()[0], dtype=int) - np.asarray(studio()[0], dtype=int)).max())
    studio_ui()
    runs = {"bare": [], "studio": [], "studio_ui": []}
    fns = {"bare": bare, "studio": studio, "studio_ui": studio_ui}
    n = max(3, ctx.repeats + 2)
    for i in range(n):  # interleaved, order rotated: drift and noise hit all three alike
        order = list(fns)[i % 3:] + list(fns)[:i % 3]
        for k in order:
            t0 = time.perf_counter()
            fns[k]()
            runs[k].append(time.perf_counter() - t0)
    pair = {k: stats([s / b for s, b in zip(runs[k], runs["bare"])]) for k in ("studio", "studio_ui")}
    res = {"model": entry.name, "steps": steps, "max_pixel_diff": same, **{k: stats(v) for k, v in runs.items()},
           "ratio": pair["studio"], "ratio_ui": pair["studio_ui"]}
    # later requests reload nothing: a request's wall time against the pipeline's own time
    walls = []
    for _ in range(3):
        t0 = time.perf_counter()
        res_ = stack.run(req)
        walls.append((time.perf_counter() - t0) / res_.seconds)
    res["request_vs_pipeline"] = stats(walls)
    # what the CPU defaults buy, same request, interleaved
    ab = {}
    if stack.device.type == "cpu":
        import torch as _t
        threads = _t.get_num_threads()
        variants = {"default": lambda: None, "small convs on oneDNN": lambda: setattr(D, "SMALL_CONV_MACS", 0),
                    "1 thread": lambda: _t.set_num_threads(1)}
        base_macs = D.SMALL_CONV_MACS
        t = {k: [] for k in variants}
        for i in range(n):
            for k, setup in variants.items():
                setup()
                try:
                    t0 = time.perf_counter()
                    stack.run(req)
                    t[k].append(time.perf_counter() - t0)
                finally:
                    D.SMALL_CONV_MACS = base_macs
                    _t.set_num_threads(threads)
        ab = {k: {**stats(v), "ratio": stats([x / d for x, d in zip(v, t["default"])])} for k, v in t.items()}
        res["cpu_defaults"] = ab
    # the opt-in torch.compile (LDM_TORCH_COMPILE=1): a stack of its own, its first request compiles
    if not ctx.smoke:
        from ldm_core.catalog import Catalog
        cstack = ModelStack(Catalog.load(ctx.catalog), device=ctx.device, compile=True,
                            output_dir=str(Path(ctx.tmp) / "out"))
        try:
            t0 = time.perf_counter()
            cstack.run(req)
            first = time.perf_counter() - t0
            times = repeat(lambda: cstack.run(req), 3, ctx.repeats, ctx.budget)
            res["compile"] = {"first_s": first, **stats(times),
                              "vs_studio": statistics.median(times) / res["studio"]["median"]}
        except Exception as e:  # noqa: BLE001 - no compiler here, say so
            res["compile"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
        finally:
            del cstack
    lines = ["| wrapper overhead (" + f"{entry.name}, {steps} steps, batch 1) | time | vs bare loop |",
             "|---|---|---|",
             f"| bare loop (same UNet, scheduler, inputs, guidance, decode) | {fmt(res['bare'])} | 1 |",
             f"| studio: ModelStack.run (the API's path) | {fmt(res['studio'])} | "
             f"{res['ratio']['median']:.3f}× ({res['ratio']['min']:.3f}–{res['ratio']['max']:.3f}) |",
             f"| studio + the web UI's live preview every 5 steps | {fmt(res['studio_ui'])} | "
             f"{res['ratio_ui']['median']:.3f}× ({res['ratio_ui']['min']:.3f}–{res['ratio_ui']['max']:.3f}) |",
             f"| request wall time / the pipeline's own time (no reload) | | "
             f"{res['request_vs_pipeline']['median']:.3f}× |",
             f"| (same image from both: largest pixel difference {same}) | | |"]
    for k, v in ab.items():
        if k != "default":
            lines.append(f"| CPU default undone: {k} | {fmt(v)} | {v['ratio']['median']:.3f}× the studio's |")
    if "compile" in res:
        c = res["compile"]
        lines.append(f"| opt-in LDM_TORCH_COMPILE=1 | error: {c['error']} | |" if "error" in c else
                     f"| opt-in LDM_TORCH_COMPILE=1 (its first request compiles: {c['first_s']:.1f} s) | {fmt(c)} | "
                     f"{c['vs_studio']:.3f}× the studio's |")
    for ln in lines[2:]:
        log(ln)
    return res, lines


# ------------------------------------------------------------------ resident stack (fresh process)
def child_resident(catalog: str, steps: int, size: int, sr_size: int, device: str, launched: float) -> dict:
    """In a fresh process: start -> first image, later images, memory after one task and all four."""
    t_enter = time.time()
    from ldm_core.catalog import Catalog
    from ldm_core.device import module_bytes
    from ldm_core.stack import ModelStack
    stack = ModelStack(Catalog.load(catalog), device=device)
    t_import = time.time() - launched
    t0 = time.perf_counter()
    stack.run(make_request("text2img", 1, 0, steps, size))
    first, first_request = time.time() - launched, time.perf_counter() - t0
    later = []
    for i in range(3):
        t0 = time.perf_counter()
        stack.run(make_request("text2img", 1, i + 1, steps, size))
        later.append(time.perf_counter() - t0)
    one = {"rss_mb": R.rss_mb(), "weights_mb": stack.resident_bytes() / 2 ** 20, "models": list(stack._resident)}
    for task in task_names()[1:]:
        stack.run(make_request(task, 1, 0, steps, side(task, size, sr_size)))
    four = {"rss_mb": R.rss_mb(), "weights_mb": stack.resident_bytes() / 2 ** 20,
            "weights_unshared_mb": sum(module_bytes(stack._components[k]) for r in stack._resident.values()
                                       for k in r.components.values()) / 2 ** 20,   # shared parts counted per model
            "models": list(stack._resident), "components": len(stack._components)}
    return {"startup_s": t_enter - launched, "import_s": t_import, "first_image_s": first,
            "first_request_s": first_request, "load_s": stack.load_seconds, "later_s": later, "one": one,
            "four": four, "peak_rss_mb": R.peak_rss_mb()}


def bench_resident(ctx) -> tuple[dict, list[str]]:
    r = ctx.child("resident", ctx.catalog, ctx.steps, ctx.size, ctx.sr_size, ctx.device, time.time(), timeout=600)
    later = stats(r["later_s"])
    lines = ["| resident stack (fresh process, built-in text2img) | figure |", "|---|---|",
             f"| process start → first image (interpreter + imports {r['import_s']:.1f} s, load, first run)"
             f"{' (smoke: in-process, imports not counted)' if ctx.smoke else ''} | {r['first_image_s']:.2f} s |",
             f"| first request (load {sum(r['load_s'].values()):.2f} s + run) | {r['first_request_s']:.2f} s |",
             f"| later requests | {fmt(later)} |",
             f"| weights held after one task / all four (shared components once) | {r['one']['weights_mb']:.1f} MB / "
             f"{r['four']['weights_mb']:.1f} MB (held separately: {r['four']['weights_unshared_mb']:.1f} MB) |",
             f"| process RSS after one task / all four | {r['one']['rss_mb']:.0f} MB / {r['four']['rss_mb']:.0f} MB |"]
    for ln in lines[2:]:
        log(ln)
    return r, lines


# ------------------------------------------------------------------ webui launch → first image
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_webui(ctx) -> tuple[dict, list[str]]:
    import urllib.request

    from gradio_client import Client  # imported before the clock starts: the server's time is measured
    port = free_port()
    logf = open(Path(ctx.tmp) / "webui.log", "w")
    cmd = [sys.executable, str(ROOT / "webui.py"), "--port", str(port), "--models", ctx.catalog, "--offline",
           "--output-dir", str(Path(ctx.tmp) / "webui-out")]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=child_env(), cwd=str(ROOT))
    try:
        url, up = f"http://127.0.0.1:{port}/", None
        while time.perf_counter() - t0 < 180:
            if proc.poll() is not None:
                raise RuntimeError(f"webui.py exited with {proc.returncode}: "
                                   f"{(Path(ctx.tmp) / 'webui.log').read_text()[-300:]}")
            try:
                urllib.request.urlopen(url, timeout=1)
                up = time.perf_counter() - t0
                break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.05)
        if up is None:
            raise RuntimeError("webui.py did not answer within 180 s")
        client = Client(url, verbose=False)
        t1 = time.perf_counter()
        client.predict(prompt=PROMPT, seed=1, api_name="/text2img")
        first = time.perf_counter() - t0
        first_call = time.perf_counter() - t1
        later = []
        for i in range(max(2, ctx.repeats - 2)):
            t1 = time.perf_counter()
            client.predict(prompt=PROMPT, seed=2 + i, api_name="/text2img")
            later.append(time.perf_counter() - t1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        logf.close()
    r = {"server_up_s": up, "first_image_s": first, "first_call_s": first_call, "later": stats(later)}
    lines = ["| `python webui.py` (subprocess, built-in catalog) → image via gradio_client | figure |", "|---|---|",
             f"| launch → server answers | {up:.1f} s |",
             f"| launch → first image (load + generate + PNG + HTTP) | {first:.1f} s |",
             f"| a later /text2img request, end to end | {fmt(r['later'])} |"]
    for ln in lines[2:]:
        log(ln)
    return r, lines


# ------------------------------------------------------------------ large super-resolution (fresh process)
def child_superres(catalog: str, steps: int, size: int, device: str) -> dict:
    """In a fresh process: one tiled super-resolution request, its time and peak memory."""
    from ldm_core.catalog import Catalog
    from ldm_core.stack import ModelStack
    stack = ModelStack(Catalog.load(catalog), device=device)
    stack.run(make_request("superres", 1, 0, 1, 32))          # load, warm up
    req = make_request("superres", 1, 0, steps, size)
    with R.PeakMemory(device) as mem:
        t0 = time.perf_counter()
        res = stack.run(req)
        wall = time.perf_counter() - t0
    return {"seconds": wall, "steps": steps, "input": size, "output": list(res.images[0].size),
            "peak_mb": mem.peak, "work_mb": mem.work, "before_mb": mem.before}


def bench_predict(ctx) -> tuple[dict, list[str]]:
    """How well the server's time prediction (ldm_core/throughput.py) matches: the default text->image
    model measured as at start-up, then requests at growing sizes, predicted against run."""
    from ldm_core.service import Service
    from ldm_core.validation import validate
    service = Service(ctx.stack())
    t0 = time.perf_counter()
    fits = service.calibrate(["text2img"])
    measure_s = time.perf_counter() - t0
    task = service.entry("text2img")
    rows = []
    lines = [f"| text->image ({task.name}), 2 steps | predicted | run | run / predicted |", "|---|---|---|---|"]
    sides = [task.width * k for k in ((1, 2) if ctx.smoke else (1, 4, 8, 12, 16)) if task.width * k <= 1024]
    for side in sides:
        req = make_request("text2img", 1, 1, 2, side)
        predicted = service.throughput.estimate(validate(req, service.catalog, service.limits)).seconds
        t = time.perf_counter()
        service.run(req)
        run = time.perf_counter() - t
        rows.append({"side": side, "predicted_s": predicted, "run_s": run})
        lines.append(f"| {side}×{side} | {predicted:.2f} s | {run:.2f} s | {run / predicted:.2f} |")
        log(lines[-1])
    lines.append(f"(measured at start-up in {measure_s:.1f} s: {fits})")
    return {"fits": fits, "measure_s": measure_s, "rows": rows}, lines


def bench_superres(ctx) -> tuple[dict, list[str]]:
    r = ctx.child("superres", ctx.catalog, ctx.steps, ctx.large_sr, ctx.device, timeout=900)
    lines = [f"| large super-resolution, tiled ({r['input']}² → {r['output'][0]}×{r['output'][1]}, {r['steps']} "
             f"steps, fresh process) | figure |", "|---|---|",
             f"| time | {r['seconds']:.1f} s ({r['seconds'] / r['steps']:.2f} s/step) |",
             f"| peak RSS of the process (model and interpreter included) | {r['peak_mb']:.0f} MB |",
             f"| of which the request itself | {r['work_mb']:.0f} MB |"]
    for ln in lines[2:]:
        log(ln)
    return r, lines


# ------------------------------------------------------------------ real-size memory (fresh process per case)
def memory_cases(smoke: bool) -> list[tuple[str, dict]]:
    attn = [("sdpa", "off (SDPA)"), ("sliced", "on (sliced)"), ("unfused", "unfused attention (reference)")]
    if smoke:
        unets, vae, big = ["tiny"], "tiny-vae", 8
    else:
        unets, vae, big = ["ldm256", "sd15"], "sd15-vae", 64
    cases = []
    for m in unets:
        heavy = m == "sd15"
        for a, label in attn:
            cases.append((f"{R.LABELS[m]}, guided step | {label}",
                          {"what": "unet", "model": m, "attention": a, "batch": 2,
                           "warmup": 0 if heavy else 1, "repeats": 2 if heavy else 3}))
    f = 2 ** (len(R.CONFIGS[vae]["block_out_channels"]) - 1)
    px = big * f
    vae_cases = [(f"{px}² decode | whole (the studio's choice: it fits)", "plain", 1, big, None, 1, 2),
                 (f"{px}² decode | unfused attention (reference)", "unfused", 1, big, None, 1, 2),
                 (f"{2 * px}² decode | whole (the studio's choice while it fits in half the free memory)", "plain",
                  1, 2 * big, None, 0, 1),
                 (f"{2 * px}² decode | tiled, {px}² tiles (the studio's choice when it would not)", "tiled", 1,
                  2 * big, None, 0, 1),
                 (f"4×{px // 2}² decode | whole batch (the studio's choice while it fits)", "plain", 4, big // 2,
                  None, 1, 2),
                 (f"4×{px // 2}² decode | one image at a time (the studio's choice when only that fits)", "sliced",
                  4, big // 2, None, 1, 2)]
    for label, mode, batch, latent, tile, warmup, repeats in vae_cases:
        cases.append((f"{R.LABELS[vae]} {label}", {"what": "vae", "model": vae, "vae_mode": mode, "batch": batch,
                                                   "latent": latent, "tile": tile, "warmup": warmup,
                                                   "repeats": repeats}))
    return cases


def child_memory(cases: list[dict]) -> list[dict]:
    """Real-size cases, one after another (the full run gives each its own fresh process)."""
    out = []
    for c in cases:
        try:
            out.append(R.run_case(c))
        except Exception as e:  # noqa: BLE001
            out.append({"error": f"{type(e).__name__}: {str(e)[:200]}"})
    return out


CHILDREN = {"resident": child_resident, "superres": child_superres, "memory": child_memory}


def bench_memory(ctx) -> tuple[dict, list[str]]:
    cases = memory_cases(ctx.smoke)
    results = []
    lines = ["| real-size case (random weights, fresh process, CPU: peak RSS) | setting | extra memory of the "
             "step (peak − before) | peak RSS | time |", "|---|---|---|---|---|"]
    device_type = ctx.device.split(":")[0]

    def emit(label, case, r):
        name, setting = label.split(" | ")
        results.append({"case": name, "setting": setting, **case, **r})
        if "error" in r:
            lines.append(f"| {name} | {setting} | error: {r['error']} | | |")
        else:
            lines.append(f"| {name} | {setting} | {r['work_mb']:.0f} MB | {r['peak_mb']:.0f} MB | "
                         f"{fmt(stats(r['times']))} |")
        log(lines[-1])
        if case["what"] == "unet" and case["attention"] == "sdpa":   # the studio's auto: same configuration
            auto = "sliced" if R.studio_auto_slicing(device_type) else "sdpa"
            if auto == "sdpa":
                results.append({"case": name, "setting": "studio auto", "same_as": setting, **case, **r})
                lines.append(f"| {name} | studio auto → off on {device_type} (the same configuration) | ″ | ″ | ″ |")
                log(lines[-1])

    dev = {"device": ctx.device}
    if ctx.smoke:  # all tiny cases in this process: a smoke test of the code, not a measurement
        for (label, case), r in zip(cases, child_memory([{**c, **dev} for _, c in cases])):
            emit(label, case, r)
    else:
        for label, case in cases:
            try:
                r = ctx.child("memory", [{**case, **dev}], timeout=900)[0]
            except Exception as e:  # noqa: BLE001
                r = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
            emit(label, case, r)
    return {"cases": results}, lines


# ------------------------------------------------------------------ GPU
def bench_gpu(ctx) -> tuple[dict, list[str]]:
    import gpu
    res = gpu.GpuSuite(ctx.device, ctx.gpu_budget, str(BENCH / "results-cuda.json")).run()
    return res, gpu.table(res)


# ------------------------------------------------------------------ hub models at full size (bench/hub.py)
def bench_hub(ctx) -> tuple[dict, list[str]]:
    import hub
    rows, lines = hub.run(list(hub.NATIVE), "tiny" if ctx.smoke else "full", ctx.device, in_process=ctx.smoke,
                          log=log)
    for ln in lines:
        log(ln)
    return {"models": rows}, lines


# ------------------------------------------------------------------ real size on 2 CPU threads (bench/cpu_real.py)
def bench_cpu_real(ctx) -> tuple[dict, list[str]]:
    import cpu_real
    return cpu_real.run(list(cpu_real.MODELS), "tiny" if ctx.smoke else "full", in_process=ctx.smoke,
                        repeats=ctx.repeats, budget=ctx.budget, log=log)


# ------------------------------------------------------------------ driver
class Context:
    def __init__(self, a, catalog: str, tmp: str, device: str):
        self.smoke, self.catalog, self.tmp, self.device = a.smoke, catalog, tmp, device
        self.repeats = 2 if a.smoke else a.repeats
        self.steps = 2 if a.smoke else 25
        self.size = 32 if a.smoke else 64                 # text2img/inpaint input size (catalog native)
        self.sr_size = 16 if a.smoke else 64               # super-resolution input (→ 4x)
        self.large_sr = 80 if a.smoke else 256             # tiled super-resolution input
        self.budget = 2.0 if a.smoke else a.budget_s
        self.gpu_budget = a.gpu_budget_s
        self._stack = None

    def child(self, name: str, *args, timeout: float):
        """A measuring child: a fresh process in the full run, this process in the smoke run."""
        if self.smoke:
            return CHILDREN[name](*args)
        return run_child(name, list(args), timeout)

    def stack(self):
        if self._stack is None:
            from ldm_core.catalog import Catalog
            from ldm_core.stack import ModelStack
            self._stack = ModelStack(Catalog.load(self.catalog), device=self.device,
                                     output_dir=str(Path(self.tmp) / "out"))
        return self._stack


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="one tiny case of each benchmark (tiny random models)")
    p.add_argument("--gpu-only", action="store_true", help="only the real-size GPU cases (bench/gpu.py)")
    p.add_argument("--sections", default=None, help=f"comma-separated subset of {','.join(SECTIONS)} (default: "
                   f"all; --smoke also {','.join(SMOKE_ALSO)}), or of {','.join(OPTIONAL_SECTIONS)}")
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=7, help="most runs per figure (at least 2)")
    p.add_argument("--budget-s", type=float, default=6.0, help="time per figure before stopping repeats")
    p.add_argument("--gpu-budget-s", type=float, default=270.0, help="the GPU suite stops starting cases after this")
    p.add_argument("--models", default=None, help="catalog (default: models/catalog.toml; tiny models in --smoke)")
    p.add_argument("--out", default=None)
    p.add_argument("--child", nargs=2, metavar=("NAME", "JSON_ARGS"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(CHILDREN[a.child[0]](*json.loads(a.child[1]))), flush=True)
        return
    if a.gpu_only:
        import gpu
        out = a.out or str(BENCH / "results-cuda.json")
        gpu.main(["--out", out, "--budget-s", str(a.gpu_budget_s)] + (["--device", a.device]
                                                                       if a.device != "auto" else []))
        return
    import torch
    device = a.device if a.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    sections = ([s.strip() for s in a.sections.split(",") if s.strip()] if a.sections is not None
                else list(SECTIONS) + list(SMOKE_ALSO) * a.smoke)
    unknown = set(sections) - set(SECTIONS) - set(OPTIONAL_SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; choose from {SECTIONS + OPTIONAL_SECTIONS}")
    if not device.startswith("cuda") and "gpu" in sections:
        sections.remove("gpu")
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ldm-bench-") as tmp:
        catalog = a.models
        if a.smoke and not catalog:
            from ldm_core.testing import write_tiny_catalog
            catalog = str(write_tiny_catalog(Path(tmp) / "tiny"))
        catalog = str(Path(catalog or ROOT / "models" / "catalog.toml").resolve())
        ctx = Context(a, catalog, tmp, device)
        out = Path(a.out or BENCH / f"results-{device.split(':')[0]}{'-smoke' if a.smoke else ''}.json")
        results = {"machine": machine(), "device": device, "smoke": a.smoke, "catalog": catalog, "sections": {},
                   "seconds": {}}
        m = results["machine"]
        title = (f"## Benchmarks: {m['cpu']}, {m.get('cores_usable', m['cpu_count'])} cores"
                 f"{', ' + m['gpu'] if 'gpu' in m else ''}; device {device}; torch {m['torch']} "
                 f"({m['threads']} threads), diffusers {m.get('diffusers')}"
                 f"{' — SMOKE RUN (tiny random models, not a measurement)' if a.smoke else ''}")
        log(title)
        tables = [title, ""]
        funcs = {"latency": bench_latency, "overhead": bench_overhead, "resident": bench_resident,
                 "webui": bench_webui, "request": lambda c: serving.bench_request(c, sys.modules[__name__]),
                 "contention": lambda c: serving.bench_contention(c, sys.modules[__name__]),
                 "superres": bench_superres, "memory": bench_memory, "gpu": bench_gpu,
                 "hub": bench_hub, "predict": bench_predict, "cpu-real": bench_cpu_real}
        for name in sections:
            t0 = time.perf_counter()
            log(f"\n### {name}")
            try:
                data, lines = funcs[name](ctx)
            except Exception as e:  # noqa: BLE001 - a failed section is reported, the others still run
                data = {"error": f"{type(e).__name__}: {str(e)[:300]}", "traceback": traceback.format_exc()[-3000:]}
                lines = [f"| {name} | error: {data['error']} |", "|---|---|"]
                log(f"{name}: ERROR {data['error']}")
            results["sections"][name] = data
            results["seconds"][name] = time.perf_counter() - t0
            tables += lines + [""]
            out.write_text(json.dumps(results, indent=1, default=str))
        total = time.perf_counter() - t_start
        results["seconds"]["total"] = total
        if hasattr(os, "getloadavg"):
            results["machine"]["loadavg_at_end"] = os.getloadavg()
        out.write_text(json.dumps(results, indent=1, default=str))
    load = [m.get("loadavg_at_start"), results["machine"].get("loadavg_at_end")]
    tables.append(f"(whole run: {total:.0f} s; sections: "
                  + ", ".join(f"{k} {v:.0f} s" for k, v in results["seconds"].items() if k != "total")
                  + (f"; 1-min load average at start / end: {load[0][0]:.1f} / {load[1][0]:.1f}" if all(load) else "")
                  + ")")
    log("\n" + "\n".join(tables))
    log(f"\nwritten to {out}")
    failed = [k for k, v in results["sections"].items() if isinstance(v, dict) and "error" in v]
    if failed and a.smoke:
        raise SystemExit(f"smoke run: sections failed: {failed}")


if __name__ == "__main__":
    main()
