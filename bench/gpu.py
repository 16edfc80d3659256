"""GPU speed and memory of the real-size architectures (random weights), one process.

    python bench/gpu.py [--out bench/results-cuda.json] [--budget-s 110]

For the SD-1.5-sized UNet at 512² (64×64×4 latent, 77×768 context) and the paper's LDM
text2im 256² UNet: iterations/s at batch 1 and of a guided step (batch 2), peak
`torch.cuda.max_memory_allocated`, for fp16 vs bf16, SDPA vs sliced attention, and
`torch.compile`. Also the SD-1.5 VAE decode at 512² with and without slicing/tiling.
Imports only torch and diffusers (the GPU machines have no gradio). Each case is caught on its
own, and a case that would start past the time budget is skipped and said so.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from realsize import LDM_TEXT2IM_256, SD15_UNET, SD15_VAE  # noqa: E402

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def timed(fn, iters: int, warmup: int = 3, rounds: int = 3) -> dict:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    rates = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        torch.cuda.synchronize()
        rates.append(iters / (time.perf_counter() - t0))
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "n": rounds}


def unet_case(cfg: dict, dtype: str, attention: str, batch: int, ctx_len: int = 77) -> dict:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**cfg).to("cuda", DTYPES[dtype]).eval()
    if attention == "sliced":
        unet.set_attention_slice("auto")
    fn_model = unet
    compile_s = None
    if attention == "compile":
        fn_model = torch.compile(unet)
    s = cfg["sample_size"]
    x = torch.randn(batch, 4, s, s, device="cuda", dtype=DTYPES[dtype])
    ctx = torch.randn(batch, ctx_len, cfg["cross_attention_dim"], device="cuda", dtype=DTYPES[dtype])
    t = torch.tensor([500] * batch, device="cuda")

    @torch.inference_mode()
    def step():
        fn_model(x, t, encoder_hidden_states=ctx)

    if attention == "compile":
        t0 = time.perf_counter()
        step()
        torch.cuda.synchronize()
        compile_s = time.perf_counter() - t0
    torch.cuda.reset_peak_memory_stats()
    rate = timed(step, iters=20)
    peak = torch.cuda.max_memory_allocated() / 2 ** 20
    del unet, fn_model
    torch.cuda.empty_cache()
    return {"it_s": rate, "peak_mib": peak, "compile_s": compile_s}


def vae_case(mode: str) -> dict:
    vae = AutoencoderKL(**SD15_VAE).to("cuda", torch.float16).eval()
    if mode == "sliced+tiled":
        vae.enable_slicing()
        vae.enable_tiling()
    z = torch.randn(1, 4, 64, 64, device="cuda", dtype=torch.float16)
    torch.cuda.reset_peak_memory_stats()

    @torch.inference_mode()
    def dec():
        vae.decode(z)

    rate = timed(dec, iters=5, warmup=1)
    peak = torch.cuda.max_memory_allocated() / 2 ** 20
    del vae
    torch.cuda.empty_cache()
    return {"s": 1 / rate["median"], "peak_mib": peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="bench/results-cuda.json")
    p.add_argument("--budget-s", type=float, default=110)
    args = p.parse_args()
    start = time.monotonic()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    dev = torch.cuda.get_device_name()
    results = {"device": dev, "torch": torch.__version__, "cases": []}
    # most wanted first: a case that would start past the budget is skipped
    cases = [("unet", "sd15", "fp16", m, b) for m in ("sdpa", "compile", "sliced") for b in (1, 2)]
    cases += [("unet", "sd15", "bf16", "sdpa", b) for b in (1, 2)]
    cases += [("vae", "sd15-vae", "fp16", m, 1) for m in ("plain", "sliced+tiled")]
    cases += [("unet", "ldm256", "fp16", "sdpa", 2), ("unet", "sd15", "bf16", "sliced", 2)]
    print(f"| {dev} | dtype | attention | batch | it/s (median, min-max) | peak MiB | note |", flush=True)
    print("|---|---|---|---|---|---|---|", flush=True)
    for what, model, dtype, mode, batch in cases:
        row = {"what": what, "model": model, "dtype": dtype, "mode": mode, "batch": batch}
        if time.monotonic() - start > args.budget_s:
            row["error"] = "skipped: time budget"
        else:
            try:
                if what == "unet":
                    cfg = SD15_UNET if model == "sd15" else LDM_TEXT2IM_256
                    row.update(unet_case(cfg, dtype, mode, batch))
                else:
                    row.update(vae_case(mode))
            except Exception as e:  # one failing case must not sink the suite
                row["error"] = f"{type(e).__name__}: {str(e)[:200]}"
        results["cases"].append(row)
        if "error" in row:
            print(f"| {model} | {dtype} | {mode} | {batch} | - | - | {row['error']} |", flush=True)
        elif what == "unet":
            r = row["it_s"]
            note = f"compile {row['compile_s']:.0f} s" if row["compile_s"] else ""
            print(f"| {model} | {dtype} | {mode} | {batch} | {r['median']:.1f} ({r['min']:.1f}-{r['max']:.1f}) "
                  f"| {row['peak_mib']:.0f} | {note} |", flush=True)
        else:
            print(f"| {model} decode 512² | {dtype} | {mode} | 1 | {row['s'] * 1000:.1f} ms/decode "
                  f"| {row['peak_mib']:.0f} | |", flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
