"""Real-size architectures (random weights) and one memory/speed case, measured.

Imports nothing but the standard library, torch and diffusers, so the GPU suite runs on a
machine that has neither gradio nor the studio's other dependencies.

    python bench/realsize.py '{"what": "unet", "model": "sd15", "attention": "sdpa", ...}'

prints one JSON line: peak memory and the time of each repeat. Run it in a fresh process per
case on CPU, where peak RSS is a process-wide high-water mark.
"""
from __future__ import annotations

import json
import sys
import time

import torch

# Published configurations. Speed and memory do not depend on weight values.
# The paper's text-to-image LDM (CompVis/ldm-text2im-large-256): 32x32x4 latent, 320 channels,
# multipliers 1-2-4-4, LDMBert context 1280.
LDM_TEXT2IM_256 = dict(sample_size=32, in_channels=4, out_channels=4, layers_per_block=2,
                       block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=1280, attention_head_dim=8,
                       down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                       up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
# Stable Diffusion 1.5 UNet (64x64x4 latent for 512x512, CLIP ViT-L context 768) and VAE.
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
SD15_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=512,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
# Tiny stand-ins for the smoke run.
TINY_UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                 cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32,
                 down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
TINY_VAE = dict(block_out_channels=(32, 32), layers_per_block=1, latent_channels=4, norm_num_groups=32,
                sample_size=32, down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2)

CONFIGS = {"ldm256": LDM_TEXT2IM_256, "sd15": SD15_UNET, "sd15-vae": SD15_VAE, "tiny": TINY_UNET,
           "tiny-vae": TINY_VAE}
LABELS = {"ldm256": "LDM text2im 256² UNet (32×32×4, ctx 1280)", "sd15": "SD-1.5 UNet 512² (64×64×4, ctx 768)",
          "sd15-vae": "SD-1.5 VAE", "tiny": "tiny UNet", "tiny-vae": "tiny VAE"}
TEXT_TOKENS = 77

# Attention modes: "sdpa" = diffusers' default processor (torch scaled_dot_product_attention,
# fused); "sliced" = what the studio's attention slicing "on" sets (set_attention_slice("auto"),
# which replaces SDPA by SlicedAttnProcessor); "unfused" = the classic processor that
# materialises the whole attention matrix, which slicing was invented against.


def studio_auto_slicing(device_type: str) -> bool:
    """The studio's attention slicing "auto" (ldm_core.stack.ModelStack.slicing_enabled),
    mirrored here so that the GPU suite imports nothing of the studio; tests/test_bench.py
    checks that the two agree."""
    return device_type == "mps"


def build_unet(name: str, device, dtype, attention: str = "sdpa"):
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: fast on GPU, no host copy
        m = UNet2DConditionModel(**CONFIGS[name])
    m = m.to(dtype=dtype).eval().requires_grad_(False)
    set_attention(m, attention, torch.device(device).type)
    return m


def set_attention(m, attention: str, device_type: str) -> str:
    """Apply an attention mode; returns what it resolved to ("auto" -> sdpa or sliced)."""
    if attention == "auto":
        attention = "sliced" if studio_auto_slicing(device_type) else "sdpa"
    if attention == "sliced":
        m.set_attention_slice("auto")
    elif attention == "unfused":
        from diffusers.models.attention_processor import AttnProcessor
        m.set_attn_processor(AttnProcessor())
    elif attention != "sdpa":
        raise ValueError(f"unknown attention mode {attention!r}")
    return attention


def build_vae(name: str, device, dtype, mode: str = "plain", tile: int | None = None):
    from diffusers import AutoencoderKL
    torch.manual_seed(0)
    with torch.device(device):
        m = AutoencoderKL(**CONFIGS[name])
    m = m.to(dtype=dtype).eval().requires_grad_(False)
    if mode == "unfused":  # the mid-block attention unfused (the classic processor)
        from diffusers.models.attention_processor import AttnProcessor
        m.set_attn_processor(AttnProcessor())
    if mode in ("sliced", "sliced+tiled"):
        m.enable_slicing()
    if mode in ("tiled", "sliced+tiled"):
        m.enable_tiling()
        if tile:  # tile size in pixels (default: the config's sample_size)
            m.tile_sample_min_size = tile
            m.tile_latent_min_size = tile // 2 ** (len(m.config.block_out_channels) - 1)
    return m


def unet_inputs(name: str, batch: int, device, dtype, latent: int | None = None):
    cfg = CONFIGS[name]
    s = latent or cfg["sample_size"]
    g = torch.Generator("cpu").manual_seed(0)
    x = torch.randn(batch, cfg["in_channels"], s, s, generator=g).to(device, dtype)
    ctx = torch.randn(batch, TEXT_TOKENS, cfg["cross_attention_dim"], generator=g).to(device, dtype)
    t = torch.tensor(500, device=device)
    return x, t, ctx


# ------------------------------------------------------------------ process memory (CPU)
def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0); False where it cannot be reset."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_mb() -> float:
    kb = _status_kb("VmRSS")
    if kb is None:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return kb / 1024


def peak_rss_mb() -> float:
    kb = _status_kb("VmHWM")
    if kb is None:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return kb / 1024


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class PeakMemory:
    """Peak memory of the code inside `with`: (peak - before) and the absolute peak, in MB.
    CUDA: torch.cuda.max_memory_allocated. CPU: the process's peak RSS (VmHWM, reset first)."""

    def __init__(self, device):
        self.device = torch.device(device)

    def __enter__(self):
        sync(self.device)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = torch.cuda.memory_allocated(self.device) / 2 ** 20
        else:
            import gc
            gc.collect()
            self.exact = reset_peak_rss()
            self.before = rss_mb()
        return self

    def __exit__(self, *exc):
        sync(self.device)
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device) / 2 ** 20
        else:
            self.peak = peak_rss_mb()
        self.work = self.peak - self.before
        return False


# ------------------------------------------------------------------ one case
def run_case(case: dict) -> dict:
    """case: what (unet|vae), model, device, dtype, attention / vae_mode, batch, latent, repeats.
    Returns {peak_mb, work_mb, before_mb, times, attention}."""
    device = torch.device(case.get("device", "cpu"))
    dtype = getattr(torch, case.get("dtype", "float32"))
    repeats, warmup = case.get("repeats", 3), case.get("warmup", 1)
    out = {}
    with torch.inference_mode():
        if case["what"] == "unet":
            m = build_unet(case["model"], device, dtype, "sdpa")
            out["attention"] = set_attention(m, case.get("attention", "sdpa"), device.type)
            x, t, ctx = unet_inputs(case["model"], case.get("batch", 2), device, dtype, case.get("latent"))
            run = lambda: m(x, t, encoder_hidden_states=ctx, return_dict=False)[0]  # noqa: E731
        elif case["what"] == "vae":
            m = build_vae(case["model"], device, dtype, case.get("vae_mode", "plain"), case.get("tile"))
            n, s = case.get("batch", 1), case["latent"]
            z = torch.randn(n, m.config.latent_channels, s, s, generator=torch.Generator("cpu").manual_seed(0))
            z = z.to(device, dtype)
            run = lambda: m.decode(z, return_dict=False)[0]  # noqa: E731
        else:
            raise ValueError(case["what"])
        for _ in range(warmup):
            run()
        times = []
        with PeakMemory(device) as mem:
            for _ in range(repeats):
                sync(device)
                t0 = time.perf_counter()
                run()
                sync(device)
                times.append(time.perf_counter() - t0)
    out.update(peak_mb=mem.peak, work_mb=mem.work, before_mb=mem.before, times=times,
               peak_exact=getattr(mem, "exact", True))
    return out


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    case = json.loads(argv[0])
    if case.get("threads"):
        torch.set_num_threads(case["threads"])
    print(json.dumps(run_case(case)), flush=True)


if __name__ == "__main__":
    main()
