"""Speed and memory of the studio, measured (issue: benchmarks, not timed unit tests).

    python bench/run.py                 # the full suite on this machine's device (< 15 min on 2 CPU cores)
    python bench/run.py --smoke         # one tiny case of each benchmark (CI)

Prints a markdown table and writes bench/results-<device>.json. Each figure is the median of
`--repeats` runs with its spread (min-max). Memory is measured in a fresh subprocess per case:
peak RSS on CPU (`resource.getrusage`), `torch.cuda.max_memory_allocated` on GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Real architectures from their published configurations (random weights: speed and memory
# do not depend on weight values).
LDM_TEXT2IM_256 = dict(sample_size=32, in_channels=4, out_channels=4, layers_per_block=2,
                       block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=1280, attention_head_dim=8,
                       down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                       up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
SD15_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
TINY_UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                 cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
TINY_VAE = dict(block_out_channels=(32, 32), layers_per_block=1, latent_channels=4, norm_num_groups=32,
                down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)


def stats(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def fmt(s: dict, unit: str = "s", digits: int = 3) -> str:
    return f"{s['median']:.{digits}f} {unit} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


# ------------------------------------------------------------------ memory: one case per subprocess
MEMORY_CASE = r"""
import json, resource, sys, time, torch
sys.path.insert(0, {root!r})
from diffusers import AutoencoderKL, UNet2DConditionModel
case = json.loads({case!r})
dev = torch.device(case["device"]); dtype = torch.float16 if dev.type == "cuda" else torch.float32
torch.manual_seed(0)
with torch.inference_mode():
    if case["what"] == "unet":
        m = UNet2DConditionModel(**case["config"]).to(dev, dtype).eval()
        if case["slicing"] == "on":
            m.set_attention_slice("auto")
        s = case["config"]["sample_size"]
        x = torch.randn(2, 4, s, s, device=dev, dtype=dtype)           # guided: [uncond; cond]
        ctx = torch.randn(2, 77, case["config"]["cross_attention_dim"], device=dev, dtype=dtype)
        run = lambda: m(x, 10, encoder_hidden_states=ctx).sample
    else:
        m = AutoencoderKL(**case["config"]).to(dev, dtype).eval()
        if case["slicing"] == "on":
            m.enable_tiling()
        z = torch.randn(1, 4, case["latent"], case["latent"], device=dev, dtype=dtype)
        run = lambda: m.decode(z).sample
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if dev.type == "cuda":
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base_gpu = torch.cuda.memory_allocated()
    times = []
    for _ in range(case["repeats"]):
        t = time.perf_counter(); run()
        if dev.type == "cuda": torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    if dev.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base_gpu) / 2**20
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
print(json.dumps({{"peak_mb": peak, "times": times}}))
"""


def memory_case(case: dict) -> dict:
    code = MEMORY_CASE.format(root=str(ROOT), case=json.dumps(case))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1][:200]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_memory(device: str, smoke: bool, repeats: int) -> list[dict]:
    rows = []
    unets = [("tiny UNet", TINY_UNET)] if smoke else [("LDM text2im 256² (32×32×4)", LDM_TEXT2IM_256),
                                                      ("SD-1.5 UNet 512² (64×64×4)", SD15_UNET)]
    for name, cfg in unets:
        for slicing in ("off", "on"):
            r = memory_case({"what": "unet", "config": cfg, "slicing": slicing, "device": device,
                             "repeats": repeats})
            rows.append({"case": f"{name}, guided step", "slicing": slicing, **r})
    vae = ("tiny VAE decode", TINY_VAE, 8) if smoke else ("SD-1.5 VAE decode 512²", SD15_VAE, 64)
    for slicing in ("off", "on"):
        r = memory_case({"what": "vae", "config": vae[1], "latent": vae[2], "slicing": slicing, "device": device,
                         "repeats": repeats})
        rows.append({"case": vae[0], "slicing": "tiling " + slicing, **r})
    return rows


# ------------------------------------------------------------------ latency, overhead, resident stack
def bench_pipelines(catalog_path: str | None, device: str, smoke: bool, repeats: int) -> dict:
    import torch

    from ldm_core.catalog import Catalog
    from ldm_core.requests import Text2ImgRequest
    from ldm_core.stack import ModelStack
    from ldm_core.pipelines.common import apply_guidance, make_generators, make_scheduler, per_image_noise

    stack = ModelStack(Catalog.load(catalog_path), device=device)
    name = stack.catalog.default("text2img").name
    steps = 4 if smoke else 25
    t0 = time.perf_counter()
    stack.run(Text2ImgRequest(prompt="a red circle", steps=steps, seed=0))
    first = time.perf_counter() - t0
    out = {"model": name, "first_request_s": first, "latency": {}}
    for batch in (1, 4):
        times = []
        for r in range(repeats):
            t = time.perf_counter()
            stack.run(Text2ImgRequest(prompt="a red circle left of a blue square", steps=steps, seed=r,
                                      num_images=batch))
            times.append((time.perf_counter() - t) / batch)
        out["latency"][batch] = stats(times)
    # wrapper overhead: the studio's pipeline vs a bare guided loop over the same parts and inputs
    pipe = stack.load(name)
    entry = stack.catalog.get(name, "text2img")

    def bare():
        sched = make_scheduler(pipe.scheduler.config, entry.sampler)
        sched.set_timesteps(steps)
        with torch.inference_mode():
            ids = pipe.tokenizer(["", "a red circle"], padding="max_length",
                                 max_length=pipe.tokenizer.model_max_length, return_tensors="pt").input_ids
            ctx = pipe.text_encoder(ids.to(pipe.device))[0]
            f = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
            lat = per_image_noise((1, 4, entry.height // f, entry.width // f), make_generators([0]), pipe.device,
                                  ctx.dtype) * sched.init_noise_sigma
            for t in sched.timesteps:
                x = sched.scale_model_input(torch.cat([lat] * 2), t)
                lat = sched.step(apply_guidance(pipe.unet(x, t, encoder_hidden_states=ctx).sample, entry.guidance),
                                 t, lat).prev_sample
            from ldm_core.pipelines.common import decode_latents
            decode_latents(pipe.vae, lat)

    def wrapped():
        stack.run(Text2ImgRequest(prompt="a red circle", steps=steps, seed=0))

    b, w = [], []
    for _ in range(repeats):
        t = time.perf_counter(); bare(); b.append(time.perf_counter() - t)
        t = time.perf_counter(); wrapped(); w.append(time.perf_counter() - t)
    out["bare_loop"], out["studio"] = stats(b), stats(w)
    out["overhead_ratio"] = statistics.median(w) / statistics.median(b)
    out["resident_mb_one_model"] = stack.resident_bytes() / 2 ** 20
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="one tiny case of each benchmark")
    p.add_argument("--device", default="auto")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--models", default=None, help="catalog (default: models/catalog.toml; tiny models in --smoke)")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    import torch

    from ldm_core.stack import pick_device
    device = str(pick_device(a.device))
    repeats = 2 if a.smoke else a.repeats
    catalog = a.models
    if a.smoke and not catalog:
        from ldm_core.testing import write_tiny_catalog
        catalog = str(write_tiny_catalog(Path(tempfile.mkdtemp()) / "tiny"))
    results = {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
               "cpu_count": os.cpu_count(), "smoke": a.smoke}
    results["pipelines"] = bench_pipelines(catalog, device, a.smoke, repeats)
    results["memory"] = bench_memory(device, a.smoke, repeats)
    pl = results["pipelines"]
    lines = [f"## Benchmarks on {device} ({results['cpu_count']} cores, torch {results['torch']})", "",
             "| benchmark | figure |", "|---|---|",
             f"| first request after start ({pl['model']}) | {pl['first_request_s']:.2f} s |"]
    for batch, s in pl["latency"].items():
        lines.append(f"| {pl['model']}, s/image, batch {batch} | {fmt(s)} ({1 / s['median']:.1f} images/s) |")
    lines.append(f"| studio pipeline vs bare loop | {pl['overhead_ratio']:.3f}× ({fmt(pl['studio'])} vs "
                 f"{fmt(pl['bare_loop'])}) |")
    lines += ["", "| memory case | attention slicing | peak | time |", "|---|---|---|---|"]
    for r in results["memory"]:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['slicing']} | error: {r['error']} | |")
        else:
            lines.append(f"| {r['case']} | {r['slicing']} | {r['peak_mb']:.0f} MB | {fmt(stats(r['times']))} |")
    table = "\n".join(lines)
    print(table)
    out = Path(a.out or ROOT / "bench" / f"results-{device}{'-smoke' if a.smoke else ''}.json")
    out.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
