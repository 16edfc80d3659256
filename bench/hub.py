"""Real-size proof of the catalog's hub models: each one at its full published configuration
(random weights, the layout of its hub repository: ldm_core.hub_mirror), loaded through the
studio's own download path from a local Hugging Face cache (HF_HUB_OFFLINE=1), then one
request of 2 steps at its native size. Reports load time, seconds per denoising step, the
whole request, and the peak memory of a fresh process per model.

    python bench/run.py --sections hub            # the table of docs/hub-models.md
    python bench/hub.py [--scale tiny] [--models ldm-super-resolution-4x-openimages]

The mirror of a model is written (GBs: fp32 pickles where the pinned commit has only those,
fp16 safetensors elsewhere) to a temporary cache and removed after its run.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
NATIVE = {  # catalog name -> the request at the model's native size
    "ldm-text2im-large-256": ("text2img", 256),
    "gligen-1-4-generation-text-box": ("layout2img", 512),
    "ldm-super-resolution-4x-openimages": ("superres", 64),     # the UNet's sample size: 64² in, 256² out
    "stable-diffusion-inpainting": ("inpaint", 512),
}
STEPS = 2


def request(task: str, size: int, model: str, steps: int | None = STEPS):
    """The task's request at `size` (steps None: the catalog's default)."""
    from PIL import Image

    from ldm_core.tasks.inpaint import InpaintRequest
    from ldm_core.tasks.layout2img import Layout2ImgRequest
    from ldm_core.tasks.superres import SuperResRequest
    from ldm_core.tasks.text2img import Text2ImgRequest
    if task == "text2img":
        return Text2ImgRequest(prompt="a painting of a lighthouse", model=model, steps=steps, seed=0)
    if task == "layout2img":
        return Layout2ImgRequest(prompt="a cat on a sofa", boxes='[{"label": "a cat", "box": [0.2, 0.3, 0.6, 0.8]}]',
                                 model=model, steps=steps, seed=0)
    image = Image.effect_mandelbrot((size, size), (-2, -1.5, 1, 1.5), 50).convert("RGB")
    if task == "superres":
        return SuperResRequest(image=image, model=model, steps=steps, seed=0)
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (size // 4, size // 4, 3 * size // 4, 3 * size // 4))
    return InpaintRequest(image=image, mask=mask, prompt="a red door", model=model, steps=steps, seed=0)


def peak_rss_mb() -> float:
    """This process's peak resident memory since its exec (VmHWM; getrusage's ru_maxrss would also
    count the parent's memory at fork time, a parent that has just written GBs of weights)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def use_cache(cache: str) -> None:
    """Point huggingface_hub at the mirror cache (a child gets HF_HUB_CACHE in its environment;
    this is for a run in this process)."""
    import huggingface_hub.constants as constants
    constants.HF_HUB_CACHE = cache


def child_hub(name: str, cache: str, device: str) -> dict:
    """In a fresh process: load one hub model from the mirror cache, run one native-size request."""
    use_cache(cache)
    from ldm_core.catalog import Catalog
    from ldm_core.stack import ModelStack
    stack = ModelStack(Catalog.load(), device=device)
    t0 = time.perf_counter()
    stack.load(name)
    load_s = time.perf_counter() - t0
    task, size = NATIVE[name]
    stamps = []
    t0 = time.perf_counter()
    result = stack.run(request(task, size, name), callback=lambda s: stamps.append(time.perf_counter()))
    total = time.perf_counter() - t0
    step = stamps[1] - stamps[0]
    peak = peak_rss_mb()
    if device.startswith("cuda"):
        import torch
        peak = torch.cuda.max_memory_allocated() / 2 ** 20
    params = sum(p.numel() for p in stack.load(name).unet.parameters())
    return {"model": name, "task": task, "load_s": load_s, "step_s": step, "request_s": total,
            "first_step_s": stamps[0] - t0, "output": list(result.images[0].size), "peak_mb": peak,
            "unet_params": params, "dtype": str(stack.dtype).replace("torch.", ""),
            "scheduler": result.info["scheduler"]}


def on_mirrors(models: list[str], scale: str, device: str, in_process: bool, log, child, script: str,
               *args: str, timeout: float = 3600, live: bool = False):
    """For each model in turn: write its mirror (`scale`) to a temporary cache, run
    `child(name, cache, device, *args)` in this process or in a fresh `python script --child name
    cache device *args` (which prints its JSON result last), remove the mirror; yields each result
    with `pickle_opened` (whether a booby-trapped pickle was opened) added. `live`: the child's
    stderr (its progress) shows as it runs instead of being kept for the error message."""
    from ldm_core.catalog import Catalog
    from ldm_core.hub_mirror import REPOS, write_mirror
    catalog = Catalog.load()
    with tempfile.TemporaryDirectory(prefix="ldm-hub-bench-") as tmp:
        cache, marker = Path(tmp) / "cache", Path(tmp) / "a-pickle-was-opened"
        for name in models:
            entry = catalog.entries[name]
            t0 = time.perf_counter()
            snapshot = write_mirror(cache, REPOS[entry.repo_id], marker, scale,
                                    prefer_fp16=device.startswith("cuda"))
            written = time.perf_counter() - t0
            log(f"{name}: {scale} mirror written in {written:.0f} s")
            if in_process:
                r = child(name, str(cache), device, *args)
            else:
                env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
                       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
                p = subprocess.run([sys.executable, script, "--child", name, str(cache), device, *args],
                                   stdout=subprocess.PIPE, stderr=None if live else subprocess.PIPE, text=True,
                                   env=env, cwd=ROOT, timeout=timeout)
                if p.returncode:
                    why = (p.stderr or "").strip().splitlines() or [f"exit status {p.returncode} (its log is above)"]
                    raise RuntimeError(f"{name}: {why[-1][:300]}")
                r = json.loads(p.stdout.strip().splitlines()[-1])
            r["pickle_opened"] = marker.exists()
            yield r
            shutil.rmtree(snapshot.parent.parent, ignore_errors=True)   # free the disk for the next model


def run(models: list[str], scale: str = "full", device: str = "cpu", in_process: bool = False,
        log=print) -> tuple[list[dict], list[str]]:
    rows = []
    for r in on_mirrors(models, scale, device, in_process, log, child_hub, __file__):
        log(json.dumps(r))
        rows.append(r)
    what = "full published configuration" if scale == "full" else "TINY widths (smoke run, not a measurement)"
    lines = [f"| hub model ({what}, random weights, {device}, {STEPS} steps at native size) | UNet params | "
             f"weights | load | s/step | request | peak memory |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['model']}` ({r['task']}, {r['output'][0]}×{r['output'][1]}) | "
                     f"{r['unet_params'] / 1e6:.0f} M | {r['dtype']} | {r['load_s']:.1f} s | {r['step_s']:.2f} s | "
                     f"{r['request_s']:.1f} s | {r['peak_mb']:.0f} MB |")
    return rows, lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=["full", "tiny"], default="full")
    p.add_argument("--models", default=",".join(NATIVE))
    p.add_argument("--device", default="cpu")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child_hub(*a.child)), flush=True)
        return
    _, lines = run(a.models.split(","), a.scale, a.device)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
