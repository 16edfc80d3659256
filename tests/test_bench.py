"""The benchmark suite's code paths and the speed/memory defaults it chose (not timings)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import gpu as bench_gpu  # noqa: E402
import realsize as R  # noqa: E402

from ldm_core.device import native_small_convs  # noqa: E402
from ldm_core.pipelines import latents as L  # noqa: E402
from ldm_core.stack import ModelStack  # noqa: E402
from ldm_core.tasks.text2img import Text2ImgRequest  # noqa: E402


def test_bench_mirror_of_auto_slicing_matches_the_stack(tiny_catalog):
    s = ModelStack.from_catalog(tiny_catalog, device="cpu")
    for dev in ("cpu", "cuda", "mps"):
        s.device = torch.device(dev)
        assert s.slicing_enabled() == R.studio_auto_slicing(dev), dev


def test_small_convolutions_on_the_native_kernel_compute_the_same():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.SiLU(), torch.nn.Conv2d(16, 8, 1))
    x = torch.randn(2, 8, 16, 16)
    with torch.inference_mode():
        ref = net(x)
        assert native_small_convs(net) == 2
        assert native_small_convs(net) == 0                  # twice changes nothing
        out = net(x)
    assert torch.allclose(ref, out, atol=1e-5)
    with torch.backends.mkldnn.flags(enabled=False), torch.inference_mode():
        assert torch.equal(out, torch.nn.Sequential(*net)(x))  # the kernel conv2d takes with oneDNN off
    assert torch.backends.mkldnn.enabled                        # a process-wide switch no thread flips


def test_stacks_generating_at_once_leave_onednn_on(tiny_catalog, tmp_path):
    """Two CPU stacks of one process (pool.py) running small convolutions at the same time: the routing
    never turns oneDNN off for everyone (it did: each thread saved and restored the global switch)."""
    from concurrent.futures import ThreadPoolExecutor
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.Conv2d(8, 4, 3, padding=1))
    native_small_convs(net)
    x = torch.randn(1, 4, 16, 16)

    def run(_):
        with torch.inference_mode():
            for _ in range(200):
                net(x)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(run, range(4)))
    assert torch.backends.mkldnn.enabled


def test_stack_defaults_for_autoencoders(tiny_catalog, monkeypatch):
    s = ModelStack.from_catalog(tiny_catalog, device="cpu")
    pipe = s.load("tiny-text2img")
    vae = pipe.vae
    assert vae.auto_memory and not vae.use_slicing and not vae.use_tiling
    assert "forward" in pipe.unet.conv_in.__dict__                       # CPU: small convs routed per call
    calls = []
    real_decode = type(vae).decode
    monkeypatch.setattr(type(vae), "decode", lambda self, z, *a, **k: calls.append((self.use_slicing, self.use_tiling))
                        or real_decode(self, z, *a, **k))
    z = torch.randn(2, 4, 16, 16)
    one = L.vae_working_bytes(vae, 64, 64)
    assert one == 64 * 64 * vae.config.block_out_channels[0] * 4 * 8
    for free, plan in ((None, (False, False)), (10 ** 12, (False, False)),   # fits: the whole batch at once
                       (3 * one, (True, False)),                            # only one image fits
                       (one, (True, True))):                                # not even one: tiles
        monkeypatch.setattr(L, "available_memory", lambda device, free=free: free)
        L.decode_latents(vae, z)
        assert calls[-1] == plan, free
    assert not vae.use_slicing and not vae.use_tiling                   # back to plain after each call


def test_previews_are_decoded_only_within_their_time_budget(tiny_catalog, monkeypatch):
    s = ModelStack.from_catalog(tiny_catalog, device="cpu")
    req = Text2ImgRequest(prompt="a red circle", steps=4, seed=0)
    sizes = []

    def cb(step):
        sizes.append(s.preview("tiny-text2img", step.latents).size)

    s.run(req, callback=cb)
    assert sizes[0] == (32, 32)                                # first: decoded (its cost is measured)
    assert sizes[1:] == [(8, 8)] * 3                           # steps far faster than a decode: latent view
    monkeypatch.setattr("ldm_core.preview.PREVIEW_BUDGET", 1e9)  # a slow generation: every preview decoded
    sizes.clear()
    s.run(req, callback=cb)
    assert sizes[1:] == [(32, 32)] * 3


def test_gpu_suite_imports_neither_gradio_nor_the_studio():
    code = ("import sys; sys.path.insert(0, 'bench'); import gpu, realsize; "
            "print([m for m in sys.modules if m.split('.')[0] in ('gradio', 'gradio_client', 'ldm_core', 'tabs')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_gpu_suite_code_path_on_cpu_records_and_continues(tmp_path, monkeypatch):
    out = tmp_path / "gpu.json"
    suite = bench_gpu.GpuSuite("cpu", budget_s=600, out=str(out), small=True)
    monkeypatch.setattr(suite, "run_compile", lambda: suite.case("speed", "compile", lambda: 1 / 0))
    res = suite.run()
    assert {r["case"].split(",")[1].strip() for r in res["speed"][:1]} == {"float32"}
    assert res["speed"][0]["batch1_its"]["median"] > 0 and res["speed"][0]["guided_its"]["median"] > 0
    assert any(r.get("error", "").startswith("ZeroDivisionError") for r in res["speed"])  # recorded, not raised
    mem = {r["case"]: r for r in res["memory"]}
    auto = next(r for c, r in mem.items() if "studio auto" in c)
    assert auto["attention"] == "sdpa"
    assert json.loads(out.read_text())["memory"]                # written as it goes
    assert "| tiny UNet" in "\n".join(bench_gpu.table(res))


def test_gpu_only_without_cuda_says_so():
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine")
    out = subprocess.run([sys.executable, "bench/run.py", "--gpu-only"], capture_output=True, text=True, cwd=ROOT,
                         timeout=120)
    assert out.returncode != 0 and "no CUDA device" in out.stderr


def test_memory_case_in_a_fresh_process_measures_peak_rss():
    case = {"what": "unet", "model": "tiny", "attention": "unfused", "batch": 2, "repeats": 1}
    out = subprocess.run([sys.executable, "bench/run.py", "--child", "memory", json.dumps([[case]])],
                         capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert out.returncode == 0, out.stderr[-500:]
    r = json.loads(out.stdout.strip().splitlines()[-1])[0]
    assert r["attention"] == "unfused" and r["peak_mb"] > 100 and r["work_mb"] >= 0 and len(r["times"]) == 1
    assert np.isfinite(r["times"]).all()


def test_overhead_bench_runs_on_a_grounded_text2img_model(tiny_catalog, tmp_path):
    """The built-in text2img UNet also takes a (here empty) box grounding map: the bare loop the
    overhead section compares against must feed it too."""
    text = tiny_catalog.read_text()
    grounded = text.replace('source = "tiny-text2img"', 'source = "tiny-layout2img"', 1)
    assert grounded != text
    cat = tiny_catalog.parent / "catalog-grounded-text2img.toml"
    cat.write_text(grounded)
    out = tmp_path / "overhead.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--sections", "overhead",
                        "--models", str(cat), "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    ov = json.loads(out.read_text())["sections"]["overhead"]
    assert "error" not in ov


def test_hub_bench_runs_a_mirrored_hub_model_in_a_fresh_process(tmp_path):
    """bench/hub.py (the table of docs/hub-models.md) on a tiny mirror: the studio's download path in a child."""
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "hub.py"), "--scale", "tiny", "--models",
                        "ldm-super-resolution-4x-openimages,stable-diffusion-inpainting"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert [x["model"] for x in rows] == ["ldm-super-resolution-4x-openimages", "stable-diffusion-inpainting"]
    assert rows[0]["output"] == [256, 256] and rows[1]["output"] == [512, 512]
    assert not any(x["pickle_opened"] for x in rows) and all(x["step_s"] > 0 for x in rows)
    assert "| `stable-diffusion-inpainting` (inpaint, 512×512) |" in r.stdout


def test_cpu_real_bench_runs_the_studio_diffusers_and_openvino_on_a_tiny_mirror(tmp_path):
    """bench/cpu_real.py (issue #28) on a tiny mirror in a fresh process: the studio rows with and
    without speed-ups, diffusers' own pipeline, the paper's-protocol row, and that pipeline with
    its UNet converted by OpenVINO at static shapes (the guidance batch of 2)."""
    out = tmp_path / "cpu-real.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "cpu_real.py"), "--scale", "tiny", "--models",
                        "ldm-text2im-large-256", "--repeats", "2", "--out", str(out)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    m = json.loads(out.read_text())["models"][0]
    rows = {x["row"]: x for x in m["rows"]}
    assert not m["pickle_opened"]                       # diffusers read only what the studio reads
    assert {"studio", "studio exact", "plain diffusers", "OpenVINO"} <= set(rows)
    assert rows["studio exact"]["speedups"] == "none" and rows["studio exact"]["max_diff"] == 0
    assert all(0 <= x["max_diff"] <= 255 for x in m["rows"] if "max_diff" in x)
    assert any(k.startswith("plain diffusers, 1 DDIM") for k in rows)
    ov = rows["OpenVINO"]
    assert ov["input_shapes"] == [[2, 4, 8, 8], [], [2, 77, 1280]] and ov["precision"] in ("f32", "bf16", "f16")
    assert rows["plain diffusers"]["vs_plain"] == 1 and all(x["median"] > 0 for x in m["rows"] if "median" in x)
    assert "| OpenVINO |" in r.stdout and "(vs plain diffusers)" in r.stdout
