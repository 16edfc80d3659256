"""The GPU suite: real-size architectures only (SD-1.5-sized UNet and VAE, the paper's LDM
text2im 256 UNet), random weights.

    python bench/run.py --gpu-only        # < 5 min on an H100, torch.compile (cold, warm cache, autotune) included
    python bench/gpu.py [--out bench/results-cuda.json] [--budget-s 270]   # the same (scripts/gpu-train.sh)

Imports nothing but the standard library, torch and diffusers (no gradio, nothing of the
studio), so it runs on a bare CUDA machine. Every case is caught on its own: a failure is
recorded and printed, and the suite goes on. Results are printed as they come and written
to JSON after every case.

- speed: UNet calls per second at 512² (64×64×4 latent), batch 1 (one plain step) and batch
  2 (one guided step: [uncond; cond]), for fp16 / bf16, SDPA / sliced attention,
  cudnn.benchmark, channels-last, a CUDA graph of the eager UNet, and torch.compile
  (mode "default", then "reduce-overhead" = with CUDA graphs, if time is left; the compile
  runs last, in a subprocess with a deadline, so a slow compile cannot take the suite past
  its budget: whatever the deadline cuts off is reported as such);
- DeepCache: the guided step under the studio's DeepCache (ldm_core.speedups; the one import
  of the studio, torch and the DeepCache package only), a full call every 3rd or 5th step;
- variants: the guided step with each SDPA kernel alone (flash, memory-efficient, cuDNN, math)
  and with fused QKV projections, each with its largest output difference from the eager
  default; torch.compile also with mode "max-autotune", and the compile repeated in a new
  process over the first one's on-disk cache (what a restarted server waits);
- memory: torch.cuda.max_memory_allocated of one guided UNet step with attention slicing
  off (SDPA), on (sliced), the studio's "auto" and the unfused attention that slicing was
  invented against; VAE decodes at 512², 1024² (plain / tiled) and 4×512² (plain / sliced).
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import tempfile
import statistics
import subprocess
import sys
import time
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import realsize as R  # noqa: E402  (torch + diffusers only)


def _log(*a) -> None:
    print(*a, flush=True)


def _stats(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def calls_per_second(fn, device, blocks: int = 4, per_block: int = 8, warmup: int = 3) -> dict:
    """Throughput of fn(): `blocks` timed blocks of `per_block` calls, one sync per block."""
    for _ in range(warmup):
        fn()
    R.sync(device)
    rates = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(per_block):
            fn()
        R.sync(device)
        rates.append(per_block / (time.perf_counter() - t0))
    return _stats(rates)


class GpuSuite:
    def __init__(self, device: str = "cuda", budget_s: float = 140.0, out: str | None = None, small: bool = False,
                 compile_backend: str = "inductor"):
        self.device = torch.device(device)
        self.t0 = time.perf_counter()
        self.deadline = self.t0 + budget_s
        self.out = out
        self.small = small                      # tiny models: a test of the code path, not a measurement
        self.compile_backend = compile_backend
        self.unet = "tiny" if small else "sd15"
        self.unets = ["tiny"] if small else ["ldm256", "sd15"]
        self.vae = "tiny-vae" if small else "sd15-vae"
        self.dtype = torch.float16 if self.device.type == "cuda" else torch.float32
        self.sizes = {"blocks": 2, "per_block": 2, "warmup": 1} if small else {}   # calls per throughput figure
        self.repeats = 1 if small else 3                                             # runs per memory figure
        self.results: dict = {"meta": self.meta(), "speed": [], "memory": [], "errors": []}

    def meta(self) -> dict:
        m = {"device": str(self.device), "torch": torch.__version__, "cuda": torch.version.cuda,
             "python": sys.version.split()[0]}
        try:
            import diffusers
            m["diffusers"] = diffusers.__version__
        except Exception:  # noqa: BLE001
            pass
        if self.device.type == "cuda":
            m["gpu"] = torch.cuda.get_device_name(self.device)
            m["gpu_memory_gb"] = round(torch.cuda.get_device_properties(self.device).total_memory / 2 ** 30, 1)
        return m

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def save(self) -> None:
        self.results["elapsed_s"] = time.perf_counter() - self.t0
        if self.out:
            with open(self.out, "w") as f:
                json.dump(self.results, f, indent=1, default=str)

    def case(self, kind: str, label: str, fn, min_left: float = 3.0) -> dict | None:
        """Run one case; record its result or its error; never raise."""
        if self.left() < min_left:
            row = {"case": label, "skipped": f"time budget ({self.left():.0f} s left)"}
            self.results[kind].append(row)
            _log(f"[gpu] {label}: skipped (time budget)")
            self.save()
            return None
        try:
            row = {"case": label, **fn()}
            _log(f"[gpu] {label}: " + ", ".join(f"{k}={_short(v)}" for k, v in row.items() if k != "case"))
        except Exception as e:  # noqa: BLE001 - one failed case must not end the suite
            row = {"case": label, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
            self.results["errors"].append({"case": label, "traceback": traceback.format_exc()[-2000:]})
            _log(f"[gpu] {label}: ERROR {row['error']}")
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        self.results[kind].append(row)
        self.save()
        return row

    # ------------------------------------------------------------ speed
    def speed_row(self, m, dtype, channels_last: bool = False) -> dict:
        row = {}
        for batch, key in ((1, "batch1"), (2, "guided")):
            x, t, ctx = R.unet_inputs(self.unet, batch, self.device, dtype)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            row[key + "_its"] = calls_per_second(lambda: m(x, t, encoder_hidden_states=ctx, return_dict=False),
                                                 self.device, **self.sizes)
        return row

    def run_speed(self) -> None:
        name = R.LABELS[self.unet]
        dt = str(self.dtype).replace("torch.", "")
        cuda = self.device.type == "cuda"
        with torch.inference_mode():
            m = R.build_unet(self.unet, self.device, self.dtype)
            self.case("speed", f"{name}, {dt}, SDPA (the studio's default)", lambda: self.speed_row(m, self.dtype))

            def sliced():
                m.set_attention_slice("auto")
                try:
                    return self.speed_row(m, self.dtype)
                finally:
                    m.set_attention_slice(None)      # back to SDPA
            self.case("speed", f"{name}, {dt}, sliced attention (slicing on)", sliced)
            if cuda:
                def bf16():
                    m.to(torch.bfloat16)
                    try:
                        return self.speed_row(m, torch.bfloat16)
                    finally:
                        m.to(self.dtype)
                self.case("speed", f"{name}, bf16, SDPA", bf16)
                torch.backends.cudnn.benchmark = True
                self.case("speed", f"{name}, {dt}, SDPA, cudnn.benchmark", lambda: self.speed_row(m, self.dtype))

            def channels_last():
                m.to(memory_format=torch.channels_last)
                try:
                    return self.speed_row(m, self.dtype, channels_last=True)
                finally:
                    m.to(memory_format=torch.contiguous_format)
            self.case("speed", f"{name}, {dt}, SDPA, channels-last" + (", cudnn.benchmark" if cuda else ""),
                      channels_last)
            if cuda:
                torch.backends.cudnn.benchmark = False
            m = None   # free it before the next case
        if cuda:
            torch.cuda.empty_cache()

    def variant_row(self, m, base, inputs, within=None) -> dict:
        """Guided-step throughput under `within` (a context manager) and the output's largest
        difference from the eager SDPA output on the same inputs (same weights, same dtype)."""
        x, t, ctx = inputs
        with within if within is not None else contextlib.nullcontext():
            out = m(x, t, encoder_hidden_states=ctx, return_dict=False)[0]
            row = {"guided_its": calls_per_second(lambda: m(x, t, encoder_hidden_states=ctx, return_dict=False),
                                                  self.device, **self.sizes)}
        row["max_diff"] = (out.float() - base.float()).abs().max().item()
        return row

    def run_deepcache(self) -> None:
        """DeepCache as the studio runs it (ldm_core.speedups.deep_cache, branch 0): guided UNet
        calls per second over a falling 50-step schedule (a full call every `interval`, the shallow
        branch between), each call's output against the exact UNet's at a cached step."""
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from ldm_core.speedups import deep_cache   # torch and DeepCache's helper only
        name, dt = R.LABELS[self.unet], str(self.dtype).replace("torch.", "")
        with torch.inference_mode():
            m = R.build_unet(self.unet, self.device, self.dtype)
            x, _, ctx = R.unet_inputs(self.unet, 2, self.device, self.dtype)
            for interval in (3, 5):
                def row(interval=interval):
                    schedule = itertools.cycle(range(980, -1, -20))
                    with deep_cache(m, interval, 0):
                        rate = calls_per_second(lambda: m(x, next(schedule), encoder_hidden_states=ctx,
                                                          return_dict=False), self.device, **self.sizes)
                    return {"guided_its": rate}
                self.case("speed", f"{name}, {dt}, SDPA, DeepCache interval {interval} (the studio's)", row)

    def run_variants(self) -> None:
        """The attention kernels PyTorch can pick for SDPA, one at a time, and diffusers' fused QKV
        projections; each against the eager default's output."""
        from torch.nn.attention import SDPBackend, sdpa_kernel
        name, dt = R.LABELS[self.unet], str(self.dtype).replace("torch.", "")
        with torch.inference_mode():
            m = R.build_unet(self.unet, self.device, self.dtype)
            inputs = R.unet_inputs(self.unet, 2, self.device, self.dtype)
            base = m(inputs[0], inputs[1], encoder_hidden_states=inputs[2], return_dict=False)[0]
            for backend in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
                b = getattr(SDPBackend, backend, None)
                if b is not None:
                    self.case("speed", f"{name}, {dt}, SDPA kernel {backend.lower()} only",
                              lambda b=b: self.variant_row(m, base, inputs, sdpa_kernel([b])))

            def fused():
                m.fuse_qkv_projections()
                try:
                    return self.variant_row(m, base, inputs)
                finally:
                    m.unfuse_qkv_projections()
            self.case("speed", f"{name}, {dt}, SDPA, fused QKV projections", fused)
            m = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def run_graph(self) -> None:
        """After the memory cases: a failed capture cannot spoil them."""
        if self.device.type != "cuda":
            return
        name, dt = R.LABELS[self.unet], str(self.dtype).replace("torch.", "")
        with torch.inference_mode():
            m = R.build_unet(self.unet, self.device, self.dtype)
            torch.backends.cudnn.benchmark = True
            try:
                self.case("speed", f"{name}, {dt}, SDPA, cudnn.benchmark, CUDA graph of the eager UNet",
                          lambda: self.graph_row(m))
            finally:
                torch.backends.cudnn.benchmark = False
                m = None
                torch.cuda.empty_cache()

    def graph_row(self, m) -> dict:
        """The eager UNet captured once in a CUDA graph and replayed: no kernel-launch overhead."""
        row = {}
        for batch, key in ((1, "batch1"), (2, "guided")):
            x, t, ctx = R.unet_inputs(self.unet, batch, self.device, self.dtype)
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    m(x, t, encoder_hidden_states=ctx, return_dict=False)
            torch.cuda.current_stream().wait_stream(stream)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                m(x, t, encoder_hidden_states=ctx, return_dict=False)
            row[key + "_its"] = calls_per_second(g.replay, self.device, **self.sizes)
            del g
        return row

    def run_compile(self) -> None:
        """torch.compile in a subprocess with a deadline; its results arrive line by line, one
        per (mode, batch), most wanted first: whatever the deadline leaves out is said so."""
        name = R.LABELS[self.unet]
        dt = str(self.dtype).replace("torch.", "")
        # "default" first: what the studio's opt-in flag uses (H200, torch 2.11: 46 s to compile batch 1)
        label = lambda mode: f"{name}, {dt}, SDPA, torch.compile mode={mode}"  # noqa: E731
        cache = tempfile.mkdtemp(prefix="ldm-inductor-")     # cold: a fresh on-disk cache, filled by this run
        spec = {"model": self.unet, "device": str(self.device), "dtype": dt, "backend": self.compile_backend,
                "modes": ["default"], "cache": cache}
        self._compile_worker(spec, {"default": label("default")})
        # the same compile again in a new process: what a restarted server pays with the cache warm
        self._compile_worker({**spec, "batches": [2]}, {"default": label("default") + ", warm on-disk cache"})
        if self.device.type == "cuda":          # then the slower modes, as far as the budget goes
            modes = ["max-autotune", "reduce-overhead"]
            self._compile_worker({**spec, "modes": modes}, {m: label(m) for m in modes})

    def _compile_worker(self, spec: dict, labels: dict) -> None:
        modes = spec["modes"]
        timeout = self.left() - 2
        if timeout < 20:
            for mode in modes:
                self.case("speed", labels[mode], lambda: {}, min_left=1e9)
            return
        cmd = [sys.executable, os.path.abspath(__file__), "--compile-worker", json.dumps(spec)]
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        t0 = time.perf_counter()
        # its own process group: at the deadline the worker and inductor's compile workers all go
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": spec["cache"], "TORCHINDUCTOR_FX_GRAPH_CACHE": "1",
               "TORCHINDUCTOR_AUTOGRAD_CACHE": "1"}
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                             env=env)
        try:
            out, err = p.communicate(timeout=timeout)
            note = None if p.returncode == 0 else f"exit {p.returncode}"
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, 9)
            except OSError:
                p.kill()
            out, err = p.communicate()
            note = f"stopped at the suite's deadline ({timeout:.0f} s)"
        wall = time.perf_counter() - t0
        got = {mode: {} for mode in modes}
        for line in out.splitlines():
            if line.startswith("{"):
                r = json.loads(line)
                got[r.pop("mode")].update(r)
        errs = [ln for ln in err.strip().splitlines() if ln.strip() and "kept in float32" not in ln]
        tail = ([ln for ln in errs if "Error" in ln][-1:] or errs[-1:] or [""])[0][:200]
        for mode in modes:
            def row(r=got[mode]):
                if "batch1_its" not in r and "guided_its" not in r:
                    raise RuntimeError(r.get("error") or f"{note or 'no result'}: {tail}")
                if note and "guided_its" not in r:
                    r["note"] = note
                return {**r, "worker_wall_s": wall}
            self.case("speed", labels[mode], row, min_left=-1e9)

    # ------------------------------------------------------------ memory
    def unet_memory(self, m, model: str, attention: str) -> dict:
        resolved = R.set_attention(m, attention, self.device.type)
        try:
            x, t, ctx = R.unet_inputs(model, 2, self.device, self.dtype)
            run = lambda: m(x, t, encoder_hidden_states=ctx, return_dict=False)  # noqa: E731
            run()
            times = []
            with R.PeakMemory(self.device) as mem:
                for _ in range(self.repeats):
                    R.sync(self.device)
                    t0 = time.perf_counter()
                    run()
                    R.sync(self.device)
                    times.append(time.perf_counter() - t0)
            return {"attention": resolved, "work_mb": mem.work, "peak_mb": mem.peak, "time": _stats(times)}
        finally:
            m.set_attention_slice(None)  # back to SDPA

    def run_memory(self) -> None:
        with torch.inference_mode():
            for model in self.unets:
                try:
                    m = R.build_unet(model, self.device, self.dtype)
                except Exception as e:  # noqa: BLE001
                    self.case("memory", f"{R.LABELS[model]}: build", lambda e=e: (_ for _ in ()).throw(e))
                    continue
                for attention, label in (("sdpa", "slicing off (SDPA)"), ("sliced", "slicing on"),
                                         ("auto", "studio auto"), ("unfused", "unfused attention (reference)")):
                    self.case("memory", f"{R.LABELS[model]}, guided step, {label}",
                              lambda a=attention, m=m, model=model: self.unet_memory(m, model, a))
                m = None
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
            big = 8 if self.small else 64
            f = 2 ** (len(R.CONFIGS[self.vae]["block_out_channels"]) - 1)
            px, px2 = big * f, 2 * big * f
            cases = [("plain", 1, big, f"{px}² decode (the studio's choice: it fits)"),
                     ("unfused", 1, big, f"{px}² decode, unfused attention"),
                     ("plain", 1, 2 * big, f"{px2}² decode, whole (the studio's choice while it fits)"),
                     ("tiled", 1, 2 * big, f"{px2}² decode, tiled (the studio's choice when short of memory)"),
                     ("plain", 4, big, f"4×{px}² decode, whole batch (the studio's choice while it fits)"),
                     ("sliced", 4, big, f"4×{px}² decode, one image at a time (when only that fits)")]
            for mode, batch, latent, label in cases:
                self.case("memory", f"{R.LABELS[self.vae]} {label}",
                          lambda mode=mode, batch=batch, latent=latent: self.vae_memory(mode, batch, latent))

    def vae_memory(self, mode: str, batch: int, latent: int) -> dict:
        vae = R.build_vae(self.vae, self.device, self.dtype, mode)
        z = torch.randn(batch, vae.config.latent_channels, latent, latent,
                        generator=torch.Generator("cpu").manual_seed(0))
        z = z.to(self.device, self.dtype)
        run = lambda: vae.decode(z, return_dict=False)  # noqa: E731
        run()
        times = []
        with R.PeakMemory(self.device) as mem:
            for _ in range(min(2, self.repeats)):
                R.sync(self.device)
                t0 = time.perf_counter()
                run()
                R.sync(self.device)
                times.append(time.perf_counter() - t0)
        vae = None
        return {"vae": mode, "work_mb": mem.work, "peak_mb": mem.peak, "time": _stats(times)}

    # ------------------------------------------------------------ all
    def run(self) -> dict:
        _log(f"[gpu] {self.results['meta']}")
        for part in (self.run_speed, self.run_deepcache, self.run_variants, self.run_memory, self.run_graph,
                     self.run_compile):
            try:
                part()
            except Exception as e:  # noqa: BLE001
                self.results["errors"].append({"case": part.__name__, "traceback": traceback.format_exc()[-2000:]})
                _log(f"[gpu] {part.__name__}: ERROR {type(e).__name__}: {e}")
        self.save()
        return self.results


def _short(v) -> str:
    if isinstance(v, dict) and "median" in v:
        return f"{v['median']:.3g} ({v['min']:.3g}-{v['max']:.3g})"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def table(results: dict) -> list[str]:
    """Markdown tables of a GPU suite's results."""
    meta = results.get("meta", {})
    lines = [f"### GPU: {meta.get('gpu', meta.get('device'))} (torch {meta.get('torch')}, CUDA {meta.get('cuda')}, "
             f"diffusers {meta.get('diffusers')})", "",
             "| UNet, random weights | batch 1, it/s | guided step (batch 2), it/s | max abs difference from eager |",
             "|---|---|---|---|"]
    for r in results.get("speed", []):
        if "error" in r or "skipped" in r:
            lines.append(f"| {r['case']} | {r.get('error') or r.get('skipped')} | |")
            continue
        extra = f" (compile {r['compile_s']:.0f} s)" if "compile_s" in r else ""
        b1 = _short(r["batch1_its"]) if "batch1_its" in r else "–"
        g = _short(r["guided_its"]) if "guided_its" in r else (r.get("note") or "–")
        diff = f"{r['max_diff']:.2g}" if "max_diff" in r else "–"
        lines.append(f"| {r['case']}{extra} | {b1} | {g} | {diff} |")
    lines += ["", "| memory case (GPU) | extra memory (max_memory_allocated) | time |", "|---|---|---|"]
    for r in results.get("memory", []):
        if "error" in r or "skipped" in r:
            lines.append(f"| {r['case']} | {r.get('error') or r.get('skipped')} | |")
            continue
        note = f" (→ {r['attention']})" if r.get("attention") and "auto" in r["case"] else ""
        lines.append(f"| {r['case']}{note} | {r['work_mb']:.0f} MB | {_short(r['time'])} s |")
    lines.append(f"\n(GPU suite: {results.get('elapsed_s', 0):.0f} s)")
    return lines


# ------------------------------------------------------------------ compile subprocess
def compile_main(spec: dict) -> None:
    device = torch.device(spec["device"])
    dtype = getattr(torch, spec["dtype"])
    with torch.inference_mode():
        m = R.build_unet(spec["model"], device, dtype)
        out = {mode: {"mode": mode} for mode in spec["modes"]}
        for mode in spec["modes"]:                              # most wanted first
            for batch, key in ((1, "batch1"), (2, "guided")):
                if batch not in spec.get("batches", (1, 2)):
                    continue
                x, t, ctx = R.unet_inputs(spec["model"], batch, device, dtype)
                r = out[mode]
                try:
                    torch._dynamo.reset()
                    kw = {} if mode == "default" else {"mode": mode}
                    mc = torch.compile(m, dynamic=False, backend=spec.get("backend", "inductor"), **kw)
                    t0 = time.perf_counter()
                    mc(x, t, encoder_hidden_states=ctx, return_dict=False)
                    R.sync(device)
                    r[f"{key}_compile_s"] = time.perf_counter() - t0
                    r.setdefault("compile_s", r[f"{key}_compile_s"])
                    r[f"{key}_its"] = calls_per_second(
                        lambda: mc(x, t, encoder_hidden_states=ctx, return_dict=False), device)
                except Exception as e:  # noqa: BLE001
                    why = str(e).splitlines()[0][:160] if str(e) else ""
                    r.setdefault("error", f"{key}: {type(e).__name__}: {why}")
                print(json.dumps(r), flush=True)     # partial results survive a deadline


def main(argv=None) -> None:
    import argparse
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results-cuda.json"))
    p.add_argument("--budget-s", type=float, default=270.0, help="stop starting cases after this (compile included)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--small", action="store_true", help="tiny models: test the code path (any device)")
    p.add_argument("--compile-backend", default="inductor", help=argparse.SUPPRESS)
    p.add_argument("--compile-worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.compile_worker:
        compile_main(json.loads(a.compile_worker))
        return
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: the GPU suite needs one (or --device cpu --small to test it)")
    res = GpuSuite(a.device, a.budget_s, a.out, small=a.small, compile_backend=a.compile_backend).run()
    print("\n".join(table(res)), flush=True)
    print(f"\nwritten to {a.out}", flush=True)


if __name__ == "__main__":
    main()
