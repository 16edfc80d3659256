"""Throughput of one against two generation workers (issue #30): a benchmark, not a timed test.

    python bench/scaling.py                  # the built-in text->image model, 12 requests per mode
    python bench/scaling.py --requests 24 --steps 50
    python bench/scaling.py --smoke          # the tiny test stack, 2 requests per mode (CI, < 2 min)

A CPU-bound workload: `--requests` text->image requests (one image each, `--steps` DDIM steps, their
own seeds), all sent at once, each mode served by workers of ONE torch thread each:

- 1 stack            one ModelStack in this process, 1 thread (the default server, but on one thread)
- devices cpu,cpu    two stacks in this process (`--devices cpu,cpu`), 1 thread each
- ray 1 replica      a Ray Serve deployment (`--ray`), a local cluster, 1 replica of 1 CPU
- ray 2 replicas     the same with 2 replicas of 1 CPU each
- default            for reference: the default server, one stack using every core

Wall time from the first request to the last image, images per minute, the speed-up over the same
kind's single worker, and whether every image equals the 1-stack image of its seed. Every mode warms
its workers first (loads the model, one request each). Prints a markdown table; with --json, writes it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from ldm_core.catalog import DEFAULT_CATALOG, Catalog  # noqa: E402
from ldm_core.jobs import Done  # noqa: E402
from ldm_core.service import Service  # noqa: E402
from ldm_core.stack import ModelStack  # noqa: E402
from ldm_core.tasks.text2img import Text2ImgRequest  # noqa: E402


def requests(model: str, n: int, steps: int) -> list[Text2ImgRequest]:
    return [Text2ImgRequest(prompt="a red circle left of a blue square", steps=steps, seed=1000 + i,
                            sampler="DDIM", model=model) for i in range(n)]


def served(service: Service, reqs: list, warm: int) -> tuple[float, list]:
    """All of `reqs` at once on `service` (after `warm` warm-up requests, at once too): (seconds, PNG paths)."""
    for job in [service.start(r) for r in reqs[:warm]]:
        list(job)
    t0 = time.perf_counter()
    jobs = [service.start(r) for r in reqs]
    paths = [[ev for ev in job if isinstance(ev, Done)][0].paths[0] for job in jobs]
    return time.perf_counter() - t0, paths


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def local(catalog: Path, out: Path, n: int, threads: int = 1) -> Service:
    stacks = [ModelStack(Catalog.load(catalog), device="cpu", threads=threads, output_dir=out) for _ in range(n)]
    return Service(stacks)


def on_ray(catalog: Path, out: Path, replicas: int) -> Service:
    from ldm_core.cluster import ClusterConfig, RayBackend, Replicas
    backend = RayBackend.start(ClusterConfig(replicas=Replicas(replicas, replicas), gpus=0, cpus=1), str(catalog))
    return Service(ModelStack(Catalog.load(catalog), device="cpu", output_dir=out), remote=backend)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=12)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--smoke", action="store_true", help="the tiny test stack, 2 requests, 4 steps")
    p.add_argument("--no-ray", action="store_true", help="only the in-process modes")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    if args.smoke:
        from ldm_core.testing import write_tiny_catalog
        catalog, model, args.requests, args.steps = write_tiny_catalog(tmp / "models"), "tiny-text2img", 2, 4
    else:
        catalog, model = Path(DEFAULT_CATALOG), "shapes-text2img"
    reqs = requests(model, args.requests, args.steps)
    rows, reference = [], None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    modes = [("1 stack", lambda o: local(catalog, o, 1)), ("devices cpu,cpu", lambda o: local(catalog, o, 2)),
             (f"default: 1 stack of {cores} threads", lambda o: local(catalog, o, 1, cores))]
    if not args.no_ray:
        modes += [("ray 1 replica", lambda o: on_ray(catalog, o, 1)),
                  ("ray 2 replicas", lambda o: on_ray(catalog, o, 2))]
    for name, make in modes:
        service = make(tmp / name.replace(" ", "-"))
        seconds, paths = served(service, reqs, warm=service.concurrency)
        images = [pixels(q) for q in paths]
        reference = reference or images
        same = all(np.array_equal(a, b) for a, b in zip(images, reference))
        rows.append({"mode": name, "workers": service.concurrency, "seconds": round(seconds, 2),
                     "images_per_min": round(60 * len(reqs) / seconds, 1), "same_pixels": same})
        if service.remote is not None:
            from ray import serve
            serve.delete("latent-diffusion-studio")
    for r in rows:
        base = next(b for b in rows if b["mode"].split()[0] == r["mode"].split()[0] and b["workers"] == 1) \
            if r["mode"].startswith("ray") else rows[0]
        r["speedup"] = round(base["seconds"] / r["seconds"], 2)
    print(f"\n{len(reqs)} requests of 1 image, {model}, {args.steps} DDIM steps, sent at once; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}\n")
    print("| mode | workers | wall s | images/min | speed-up | same pixels as 1 stack |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['workers']} | {r['seconds']} | {r['images_per_min']} | {r['speedup']}x | "
              f"{'yes' if r['same_pixels'] else 'NO'} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "requests": len(reqs), "steps": args.steps,
                                               "model": model, "date": time.strftime("%Y-%m-%d")}, indent=1))


if __name__ == "__main__":
    main()
