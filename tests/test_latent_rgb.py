"""The fitted latent -> RGB preview map (ldm_core/latent_rgb.py): faithful at the latent grid on the
built-in autoencoders (where the old false-colour view is not), stored for each built-in
autoencoder with a matching fingerprint, refitted when stale, fitted for a VQ model too, and a
preview of 64x64 latents never runs the decoder."""
import json
import shutil
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, VQModel

from ldm_core import latent_rgb
from ldm_core.catalog import MODELS_DIR
from ldm_core.pipelines.latents import encode_latents, latent_preview
from ldm_core.preview import Previewer
from ldm_core.testing import tiny_vae

MAP_PSNR_DB = 12.0          # the map on held-out images, at the latent grid (measured 14.2 and 16.5 dB)
FALSE_COLOUR_PSNR_DB = 8.0  # the old false-colour view stays below this (measured 4.9 and 6.0 dB)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LDM_LATENT_RGB_DIR", str(tmp_path / "latent-rgb-cache"))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255 ** 2 / np.mean((a.astype(np.float64) - b) ** 2)))


def _builtin_vae_folders():
    return sorted({latent_rgb.vae_folder(d) for d in MODELS_DIR.iterdir() if d.is_dir()} - {None})


def test_every_builtin_model_with_an_autoencoder_has_a_map_of_those_weights():
    folders = _builtin_vae_folders()
    assert {f.name for f in folders} >= {"shapes-autoencoder", "shapes-photo-autoencoder"}
    for folder in folders:
        stored = latent_rgb.read(folder / latent_rgb.FILE)
        assert stored is not None, f"{folder.name}: run python -m ldm_core.latent_rgb"
        vae = AutoencoderKL.from_pretrained(folder).eval()
        assert stored.fingerprint == latent_rgb.fingerprint(vae), f"{folder.name}: stale, refit it"
        assert stored.fingerprint == latent_rgb.fingerprint(vae.half())   # an fp16 load matches too
        assert latent_rgb.for_vae(AutoencoderKL.from_pretrained(folder)) == stored   # found beside the config


@pytest.mark.parametrize("name", ["shapes-autoencoder", "shapes-photo-autoencoder"])
@torch.inference_mode()
def test_map_reproduces_held_out_images_where_the_false_colour_view_does_not(name):
    vae = AutoencoderKL.from_pretrained(MODELS_DIR / name).eval()
    stored = latent_rgb.read(MODELS_DIR / name / latent_rgb.FILE)
    images = latent_rgb.fitting_images(64, 8, seed=1)             # not the fitting seed (0)
    lat = encode_latents(vae, images)
    target = F.avg_pool2d((images + 1) * 127.5, 4).permute(0, 2, 3, 1).numpy()
    mapped = stored.rgb(lat).numpy()
    false_colour = np.stack([np.asarray(im) for im in latent_preview(lat)])
    assert mapped.shape == target.shape == false_colour.shape
    assert _psnr(mapped, target) >= MAP_PSNR_DB
    assert _psnr(false_colour, target) <= FALSE_COLOUR_PSNR_DB


def test_a_stale_map_is_ignored_and_refitted_once(tmp_path, monkeypatch):
    tiny_vae().save_pretrained(tmp_path / "vae")
    stale = latent_rgb.LatentRGB(((0.0, 0.0, 0.0),) * 4, (1.0, 2.0, 3.0), "0" * 32)
    (tmp_path / "vae" / latent_rgb.FILE).write_text(stale.to_json())
    vae = AutoencoderKL.from_pretrained(tmp_path / "vae")
    fresh = latent_rgb.for_vae(vae)
    assert fresh is not None and fresh.fingerprint == latent_rgb.fingerprint(vae) != stale.fingerprint
    assert fresh.bias != stale.bias
    cached = latent_rgb.cache_dir() / f"{fresh.fingerprint}.json"
    assert latent_rgb.read(cached) == fresh                          # kept in the user cache, by fingerprint
    monkeypatch.setattr(latent_rgb, "fit", lambda *a, **k: pytest.fail("refitted a cached map"))
    assert latent_rgb.for_vae(AutoencoderKL.from_pretrained(tmp_path / "vae")) == fresh
    assert latent_rgb.for_vae(vae) is fresh                           # remembered per autoencoder


def _tiny_vq():
    torch.manual_seed(0)
    return VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                   up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 16, 16), layers_per_block=1,
                   latent_channels=3, num_vq_embeddings=64, vq_embed_dim=3, norm_num_groups=8).eval()


def _decoder_forbidden(vae):
    def fail(*_):
        raise AssertionError("the preview ran the decoder")
    return vae.decoder.register_forward_pre_hook(fail)


def test_a_vq_model_gets_a_map_and_its_previews():
    vq = _tiny_vq()
    m = latent_rgb.fit(vq)
    assert m.channels == 3 and len(m.bias) == 3 and np.isfinite(m.weight).all()
    _decoder_forbidden(vq)
    p = Previewer()
    p.start()
    lat = torch.randn(2, 3, 64, 64)
    image = p.look(vq, lat)
    assert image.size == (64, 64)
    assert np.array_equal(np.asarray(image), latent_rgb.for_vae(vq).rgb(lat[:1])[0].numpy())


def test_a_64x64_preview_costs_milliseconds_and_no_decode():
    vae = AutoencoderKL.from_pretrained(MODELS_DIR / "shapes-autoencoder").eval()
    _decoder_forbidden(vae)
    lat = torch.randn(1, 4, 64, 64)
    p = Previewer()
    p.start()
    first = p.look(vae, lat)                                         # finds the stored map
    t0 = time.perf_counter()
    image = p.look(vae, lat)
    seconds = time.perf_counter() - t0
    assert image.size == first.size == (64, 64)
    assert np.array_equal(np.asarray(image), latent_rgb.for_vae(vae).rgb(lat)[0].numpy())
    assert seconds < 0.05, seconds                                   # measured about 1 ms on 2 cores


def test_the_false_colour_view_is_the_last_fallback():
    vae = AutoencoderKL(out_channels=1, block_out_channels=(8,), norm_num_groups=8).eval()   # no RGB to map to
    with pytest.raises(ValueError, match="output channels"):
        latent_rgb.fit(vae)
    p = Previewer()
    p.start()
    lat = torch.randn(1, 4, 40, 40)
    assert np.array_equal(np.asarray(p.look(vae, lat)), np.asarray(latent_preview(lat)[0]))
    assert latent_rgb.for_vae(vae) is None                           # remembered: not retried per preview


def test_the_cli_writes_the_shared_autoencoders_map_once(tmp_path, capsys):
    models = tmp_path / "models"
    shutil.copytree(MODELS_DIR / "shapes-autoencoder", models / "shapes-autoencoder")
    (models / "shapes-autoencoder" / latent_rgb.FILE).unlink()
    for name in ("a", "b"):
        (models / name).mkdir()
        (models / name / "model_index.json").write_text(json.dumps({"_shared": {"vae": "shapes-autoencoder"}}))
    latent_rgb.main([str(models / "a"), str(models / "b")])
    out = capsys.readouterr().out
    assert out.count("fitted in") == 1 and "shares" in out
    written = latent_rgb.read(models / "shapes-autoencoder" / latent_rgb.FILE)
    committed = latent_rgb.read(MODELS_DIR / "shapes-autoencoder" / latent_rgb.FILE)
    assert written.fingerprint == committed.fingerprint and written.fitted_on == committed.fitted_on
    assert np.allclose(written.weight, committed.weight, atol=0.01)  # seeded: the same fit, to float rounding
    assert np.allclose(written.bias, committed.bias, atol=0.01)
