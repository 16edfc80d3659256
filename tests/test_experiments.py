"""The f trade-off experiment's parts on tiny sizes (the whole command runs in .ci/run with --smoke)."""
import json
import math

import numpy as np
import pytest
import torch

from ldm_core.experiments import report
from ldm_core.experiments.f_tradeoff import LATENT_CHANNELS, FTradeoffConfig, autoencoder_for, eval_prompts
from ldm_core.experiments.latent_ldm import Trainer, sample

torch.set_num_threads(1)


def test_config_rejects_unknown_factors():
    with pytest.raises(ValueError, match=r"factors \[3\] not supported"):
        FTradeoffConfig(factors=(1, 3))
    assert FTradeoffConfig(smoke=True).budget_minutes < 0.1


def test_pixel_space_round_trips_and_a_model_trains_samples_and_resumes(tmp_path):
    """f = 1: the 'latents' are standardised pixels; a tiny model trains a step, samples the right
    shape, and a second Trainer on the same folder resumes from the checkpoint."""
    cfg = FTradeoffConfig(smoke=True, out=str(tmp_path))
    space, res = autoencoder_for(cfg, 1, tmp_path)
    assert math.isinf(res["ae_psnr"]) and space.vae is None
    from ldm_core.data.shapes import render_batch
    images = render_batch(range(4))[0]
    z = space.encode(images)
    assert z.shape == (4, LATENT_CHANNELS[1], 64, 64)
    assert np.abs(space.decode(z).astype(int) - images).max() <= 1
    tr = Trainer(cfg, space, z, [f"a red circle {i}" for i in range(4)], tmp_path)
    loss = tr.step()
    assert math.isfinite(loss) and tr.progress.step == 1 and tr.progress.images == cfg.batch_size
    out = sample(tr.ema_model(), ["a red circle", "a blue square"], [0, 1], steps=2, guidance=4.0)
    assert out.shape == (2, 64, 64, 3) and out.dtype == np.uint8
    # the same seed, the same noise at any batch size; batched kernels may round differently by CPU (AVX-512
    # machines differ from AVX2 ones), so the image agrees within a grey level or two, not bit for bit
    alone = sample(tr.ema_model(), ["a red circle"], [0], steps=2, guidance=4.0)
    assert np.abs(out[:1].astype(int) - alone.astype(int)).max() <= 2
    tr.save()
    again = Trainer(cfg, space, z, ["x"] * 4, tmp_path)
    assert again.progress.step == 1
    assert all(torch.equal(a, b) for a, b in zip(again.model.unet.parameters(), tr.model.unet.parameters()))


def test_eval_prompts_cover_every_form():
    forms = [s.form for s in eval_prompts(2)]
    assert forms == ["one"] * 2 + ["two"] * 2 + ["relation"] * 2 + ["three"] * 2


def _result(f: int, acc: float) -> dict:
    c = LATENT_CHANNELS[f]
    evals = [{"step": 10 * k, "cpu_minutes": k, "images_seen": 320 * k, "acc_one": acc, "acc_two": acc,
              "acc_relation": acc, "acc_three": acc, "acc_mean": acc, "objects_found": acc, "fid": 100 / k}
             for k in (1, 2)]
    return {"f": f, "latent_shape": [c, 64 // f, 64 // f], "ae_psnr": float("inf") if f == 1 else 30.0,
            "unet_params": 6.8e6, "train_images_per_cpu_s": 3.0 * f, "steps": 20, "evals": evals,
            "sample_images_per_s": 0.5 * f, "sample_images_per_cpu_s": 0.5 * f}


def test_report_table_and_plots(tmp_path):
    for f, acc in [(1, 0.0), (4, 0.5), (16, 0.25)]:
        (tmp_path / f"f{f}").mkdir()
        (tmp_path / f"f{f}" / "results.json").write_text(json.dumps(_result(f, acc)))
    text = report.write(tmp_path, tmp_path / "docs")
    lines = text.splitlines()
    assert lines[2].startswith("| 1 | 64×64×3 | — (pixels) |") and "**0 %**" in lines[2]
    assert lines[3].startswith("| 4 | 16×16×3 | 30.0 dB |") and "**50 %**" in lines[3]
    assert "2.0 CPU-min, step 20: 25 % / 25 % / 50" in text
    for d in (tmp_path, tmp_path / "docs"):
        assert (d / "f-tradeoff-results.md").read_text().strip() == text
        assert (d / "f-tradeoff-progress.png").stat().st_size > 1000
        assert (d / "f-tradeoff-speed.png").stat().st_size > 1000
