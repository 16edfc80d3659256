"""The perceptual compression view (ldm_core/compression.py, Service.autoencoders / compress,
tabs/compression.py): metrics, the built-in autoencoder's round trip, the f trade-off's and a
converted zoo first stage found and run, input refused with the studio's messages, and the tab in
a real browser.

    OMP_NUM_THREADS=1 python -m pytest tests/test_compression.py -q
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import VQModel
from PIL import Image

from ldm_core import compression
from ldm_core.data.shapes import sample_scene
from ldm_core.eval import restore
from ldm_core.experiments.f_tradeoff import FTradeoffConfig
from ldm_core.requests import RequestError
from ldm_core.service import Service
from ldm_core.testing import tiny_vae

ROOT = Path(__file__).resolve().parent.parent
SCENE_SEED = 41_000_007      # a held-out Shapes World scene


def scene() -> Image.Image:
    return Image.fromarray(sample_scene(SCENE_SEED).image)


# ------------------------------------------------------------------ metrics
def test_metrics_on_known_images():
    a = np.full((32, 32, 3), 100, np.uint8)
    b = np.full((32, 32, 3), 110, np.uint8)                 # MSE 100: 10 log10(255² / 100) dB
    assert compression.psnr(a, a) == float("inf")
    assert compression.psnr(a, b) == pytest.approx(10 * np.log10(255 ** 2 / 100), abs=1e-9)
    assert compression.ssim(a, a) == pytest.approx(1.0)
    x = np.asarray(scene())
    noisy = np.clip(x + np.random.default_rng(0).normal(0, 20, x.shape), 0, 255).astype(np.uint8)
    assert 0.0 < compression.ssim(x, noisy) < 0.9
    # the same definitions as the super-resolution evaluation's
    assert compression.psnr(x, noisy) == pytest.approx(restore.psnr(x, noisy))
    assert compression.ssim(x, noisy) == pytest.approx(restore.ssim(x, noisy))


def test_default_f_tradeoff_folder_is_the_experiments():
    assert compression.F_TRADEOFF_DEFAULT == FTradeoffConfig().out


# ------------------------------------------------------------------ the built-ins
@pytest.fixture(scope="module")
def builtin(tmp_path_factory):
    """The studio on the built-in catalog (models/), with no f trade-off run and an empty zoo."""
    old = {k: os.environ.get(k) for k in ("LDM_F_TRADEOFF_DIR", "LDM_ZOO_DIR")}
    os.environ["LDM_F_TRADEOFF_DIR"] = str(tmp_path_factory.mktemp("no-f-tradeoff") / "absent")
    os.environ["LDM_ZOO_DIR"] = str(tmp_path_factory.mktemp("empty-zoo"))
    try:
        yield Service.from_catalog(device="cpu", output_dir=tmp_path_factory.mktemp("out"))
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def test_builtin_autoencoders_are_listed_and_checked(builtin):
    listed = {a.name: a for a in builtin.autoencoders()}
    for name in ("shapes-autoencoder", "shapes-photo-autoencoder"):
        a = listed[name]
        assert (a.source, a.kind, a.f, a.channels, a.ready, a.default) == ("built-in", "KL", 4, 4, True, True)
    kl8 = listed["zoo:kl-f8"]                    # the paper's first stages: listed, with how to get them
    assert not kl8.ready and not kl8.default and kl8.how == "python -m ldm_core download kl-f8"
    assert not any(a.source == "f trade-off" for a in listed.values())


def test_builtin_round_trip_of_a_scene(builtin):
    """Measured: 42.6 dB / SSIM 0.997 (shapes-autoencoder) and 46.6 dB / 0.998 (shapes-photo-autoencoder)
    on this scene; 35.4 dB the lowest of 20 held-out scenes."""
    trips = builtin.compress(scene(), ["shapes-photo-autoencoder", "shapes-autoencoder"])
    assert [t.autoencoder.name for t in trips] == ["shapes-autoencoder", "shapes-photo-autoencoder"]  # listed order
    for t in trips:
        assert not t.error
        assert t.latent_shape == (4, 16, 16) and t.ratio == 12.0         # 64·64·3 pixel values / 4·16·16
        assert t.image.size == (64, 64) and t.image.mode == "RGB"
        assert t.psnr > 35.0 and t.ssim > 0.98, (t.autoencoder.name, t.psnr, t.ssim)
        assert 0 < t.seconds < 30


def test_sides_are_padded_and_cropped_back(builtin):
    trip, = builtin.compress(scene().crop((0, 0, 60, 52)), ["shapes-autoencoder"])
    assert trip.image.size == (60, 52)
    assert trip.latent_shape == (4, 14, 16)                              # padded to 56 x 64, then / 4
    assert trip.psnr > 35.0


def test_kept_once_loaded(builtin):
    builtin.compress(scene(), ["shapes-autoencoder"])
    again, = builtin.compress(scene(), ["shapes-autoencoder"])
    assert again.load_seconds is None                                    # not loaded a second time


def test_cache_is_bounded():
    loaded = compression.Loaded("cpu", torch.float32, max_bytes=1)      # room for one at a time
    listed = {a.name: a for a in compression.autoencoders(ROOT / "models", Path("/nonexistent"))}
    loaded.get(listed["shapes-autoencoder"])
    loaded.get(listed["shapes-photo-autoencoder"])
    assert len(loaded) == 1
    assert loaded.get(listed["shapes-photo-autoencoder"])[1] is None     # the newest stays


# ------------------------------------------------------------------ refused input
def test_refusals(builtin, tmp_path):
    big = tmp_path / "big.png"
    Image.new("RGB", (600, 600), "white").save(big)
    with pytest.raises(RequestError, match=r"image is 600x600 = 360000 pixels; the limit is 262144"):
        builtin.compress(str(big), ["shapes-autoencoder"])
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    with pytest.raises(RequestError, match="not an image PIL can read"):
        builtin.compress(str(not_image), ["shapes-autoencoder"])
    with pytest.raises(RequestError, match="not an image PIL can read"):
        builtin.compress(b"\x89PNG but no more", ["shapes-autoencoder"])
    with pytest.raises(RequestError, match="no image given"):
        builtin.compress(None, ["shapes-autoencoder"])
    with pytest.raises(RequestError, match="at least 16 pixels"):
        builtin.compress(Image.new("RGB", (8, 8)), ["shapes-autoencoder"])
    with pytest.raises(RequestError, match="pick at least one autoencoder"):
        builtin.compress(scene(), [])
    with pytest.raises(RequestError, match="unknown autoencoder 'nope'"):
        builtin.compress(scene(), ["nope"])
    with pytest.raises(RequestError, match=r"not on this machine: zoo:kl-f8 \(get it with `python -m ldm_core "
                                           r"download kl-f8`\)"):
        builtin.compress(scene(), ["zoo:kl-f8"])


# ------------------------------------------------------------------ the f trade-off's and the zoo's
def tiny_vq() -> VQModel:
    torch.manual_seed(0)
    return VQModel(down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                   block_out_channels=(8, 16, 16), latent_channels=3, num_vq_embeddings=32, norm_num_groups=8,
                   sample_size=32)


@pytest.fixture
def elsewhere(monkeypatch, tmp_path):
    """A zoo holding a converted (tiny, random) vq-f4, and an f trade-off run with f = 1 and f = 4."""
    folder = tmp_path / "zoo" / "vq-f4"
    tiny_vq().save_pretrained(folder / "vae")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "FirstStage", "vae": ["diffusers", "VQModel"]}))
    (folder / "source.json").write_text(json.dumps({"sha256": "0" * 64, "file": "vq-f4.zip"}))
    runs = tmp_path / "f-tradeoff"
    (runs / "f1").mkdir(parents=True)
    tiny_vae(latent_channels=3).save_pretrained(runs / "f4" / "autoencoder")
    (runs / "f4" / "autoencoder" / "eval.json").write_text(json.dumps({"heldout_psnr_db": 18.5}))
    monkeypatch.setenv("LDM_ZOO_DIR", str(tmp_path / "zoo"))
    monkeypatch.setenv("LDM_F_TRADEOFF_DIR", str(runs))
    return tmp_path


def test_a_converted_zoo_first_stage_and_the_f_tradeoff_are_listed_and_run(service, elsewhere):
    listed = {a.name: a for a in service.autoencoders()}
    vq = listed["zoo:vq-f4"]
    assert (vq.ready, vq.kind, vq.f, vq.channels, vq.subfolder, vq.default) == (True, "VQ (Z = 32)", 4, 3, "vae",
                                                                                 False)
    assert not listed["zoo:kl-f8"].ready
    assert listed["f-tradeoff-f1"].kind == "pixels"
    assert (listed["f-tradeoff-f4"].f, listed["f-tradeoff-f4"].channels) == (4, 3)
    assert "18.5 dB" in listed["f-tradeoff-f4"].note
    assert listed["tiny-autoencoder"].default                          # the tiny catalog's built-in

    trips = {t.autoencoder.name: t for t in service.compress(scene(), ["zoo:vq-f4", "f-tradeoff-f1", "f-tradeoff-f4"])}
    assert not any(t.error for t in trips.values())
    assert trips["zoo:vq-f4"].latent_shape == (3, 16, 16) and trips["zoo:vq-f4"].ratio == 16.0
    assert trips["zoo:vq-f4"].image.size == (64, 64)
    assert trips["f-tradeoff-f4"].latent_shape == (3, 16, 16)
    ident = trips["f-tradeoff-f1"]                                      # the identity: nothing lost
    assert (ident.latent_shape, ident.ratio, ident.psnr, ident.ssim) == ((3, 64, 64), 1.0, float("inf"), 1.0)


def test_a_broken_folder_is_the_rows_error_not_a_crash(service, elsewhere):
    (elsewhere / "f-tradeoff" / "f4" / "autoencoder" / "diffusion_pytorch_model.safetensors").write_bytes(b"junk")
    trip, = service.compress(scene(), ["f-tradeoff-f4"])
    assert trip.image is None and "autoencoder/" in trip.error, trip.error     # the folder named, not the path


# ------------------------------------------------------------------ the tab's text
def test_tab_rows_and_the_missing_list(builtin):
    from tabs import compression as tab    # the tab module: imported here, the rest of the file needs no gradio
    trip, = builtin.compress(scene(), ["shapes-autoencoder"])
    r = tab.row(trip)
    assert len(r) == len(tab.HEADERS)
    assert r[:5] == ["shapes-autoencoder", "KL", "4", "4×16×16", "12"]
    options, checked = tab.choices(builtin.autoencoders())
    assert checked == ["shapes-autoencoder", "shapes-photo-autoencoder"]
    assert "python -m ldm_core download vq-f4" in tab.missing_text(builtin.autoencoders())


# ------------------------------------------------------------------ in a real browser
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "docs" / "screenshots" if os.environ.get("LDM_SCREENSHOTS") == "1" else Path(
    tempfile.gettempdir()) / "ldm-screenshots"


@pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium not installed (apt-get install -y chromium)")
def test_browser_upload_run_and_see_the_table(tiny_catalog, tmp_path):
    """Upload a scene beside a photograph, Run: a table row per checked autoencoder and the
    reconstructions show. LDM_BROWSER_CATALOG=models/catalog.toml runs it on the built-in models,
    LDM_SCREENSHOTS=1 writes docs/screenshots/compression.png."""
    sync_api = pytest.importorskip("playwright.sync_api")
    from servers import webui     # tests/servers.py: the studio in a subprocess
    catalog = Path(os.environ.get("LDM_BROWSER_CATALOG") or tiny_catalog)
    from ldm_core.data.photos import heldout_crops     # a held-out photograph (scikit-image's samples)
    src = tmp_path / "scene-and-photo.png"
    both = Image.new("RGB", (128, 64))
    both.paste(scene(), (0, 0))
    both.paste(Image.fromarray(heldout_crops(1)[0]), (64, 0))
    both.save(src)
    env = {"HF_HUB_OFFLINE": "1", "LDM_ZOO_DIR": str(tmp_path / "zoo"), "LDM_F_TRADEOFF_DIR": str(tmp_path / "none")}
    with webui(catalog, tmp_path / "out", "--offline", env=env) as server, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--headless",
                                                                         "--disable-gpu"], timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(15_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url, wait_until="domcontentloaded", timeout=60_000)
            page.get_by_role("tab", name="Perceptual compression").click(timeout=60_000)
            page.locator("#compress-input input[type=file]").set_input_files(str(src))
            page.locator("#compress-input img").first.wait_for(state="visible")
            checked = page.locator("#compress-which input[type=checkbox]:checked").count()
            assert checked >= 1
            page.click("#compress-run")
            rows = page.locator("#compress-table div[role=row]")     # the body's rows (the header's is a <tr>)
            page.wait_for_function("(n) => document.querySelectorAll('#compress-table div[role=row]').length >= n",
                                   arg=checked, timeout=300_000)   # behind the start-up calibration
            assert rows.count() == checked
            assert all("\tKL\t" in r or "\nKL\n" in r for r in rows.all_inner_texts()), rows.all_inner_texts()
            assert "4×16×32" in page.locator("#compress-table").inner_text()   # every built-in here: KL f=4, c=4
            page.locator("#compress-gallery img").nth(checked).wait_for(state="visible")   # input + each
            assert page.locator("[data-testid=toast-body].error").count() == 0
            page.wait_for_timeout(500)
            SHOTS.mkdir(parents=True, exist_ok=True)
            shot = Image.open(io.BytesIO(page.screenshot(full_page=True, animations="disabled"))).convert("RGB")
            shot.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
                SHOTS / "compression.png", optimize=True)
            assert not errors, errors
        finally:
            browser.close()
