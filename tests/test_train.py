"""Training stages on tiny configs: a few steps, resume, export, and the export runs in the studio."""
import json

import pytest

from ldm_core.train.__main__ import main as train_main

AE = ["--channels", "8", "16", "16", "--batch-size", "4", "--log-every", "1", "--threads", "1"]
T2I = ["--channels", "32", "32", "32", "--head-dim", "8", "--text-hidden", "32", "--text-layers", "1",
       "--num-scenes", "64", "--batch-size", "4", "--log-every", "1", "--eval-prompts-per-form", "1", "--threads", "1"]


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory):
    d = tmp_path_factory.mktemp("ae")
    train_main(["autoencoder", "--out", str(d / "run"), "--steps", "2", "--disc-start", "1", *AE])
    # resume: the second call continues from the checkpoint at step 2 and exports at 4
    train_main(["autoencoder", "--out", str(d / "run"), "--steps", "4", "--disc-start", "1",
                "--export", str(d / "shapes-autoencoder"), *AE])
    return d


def test_autoencoder_trains_resumes_and_exports(autoencoder):
    run = autoencoder / "run"
    assert json.loads((run / "checkpoint" / "trainer.json").read_text())["step"] == 4
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss_l1" in r] == [1, 2, 3, 4]       # no step trained twice
    assert any(r.get("loss_d", 0) > 0 for r in rows)                          # the discriminator ran
    assert (run / "samples.png").is_file() and (run / "loss.png").is_file()
    cfg = json.loads((autoencoder / "shapes-autoencoder" / "config.json").read_text())
    assert len(cfg["latents_mean"]) == 4 and all(s > 0 for s in cfg["latents_std"])
    ev = json.loads((autoencoder / "shapes-autoencoder" / "eval.json").read_text())
    assert ev["heldout_scenes"] == 256 and ev["heldout_psnr_db"] > 0


def test_text2img_trains_exports_and_runs_in_the_studio(autoencoder, tmp_path):
    from ldm_core.catalog import Catalog
    from ldm_core.requests import Text2ImgRequest
    from ldm_core.stack import ModelStack
    (autoencoder / "shapes-autoencoder" / "model_index.json").write_text('{"_class_name": "AutoencoderKL"}')
    export = autoencoder / "shapes-text2img"
    train_main(["text2img", "--out", str(tmp_path / "run"), "--steps", "3", "--autoencoder",
                str(autoencoder / "shapes-autoencoder"), "--export", str(export), *T2I])
    assert (tmp_path / "run" / "samples.png").is_file()
    index = json.loads((export / "model_index.json").read_text())
    assert index["_shared"] == {"vae": "shapes-autoencoder"}
    cat = autoencoder / "catalog.toml"
    cat.write_text('[[model]]\nname = "t"\ntask = "text2img"\nsource = "shapes-text2img"\n'
                   'pipeline = "Text2ImgPipeline"\nsteps = 3\n')
    r = ModelStack(Catalog.load(cat), device="cpu").run(Text2ImgRequest(prompt="a red circle", seed=1))
    assert r.images[0].size == (64, 64)


def test_inpaint_and_superres_stages_train_export_and_run(autoencoder, tmp_path):
    from PIL import Image

    from ldm_core.catalog import Catalog
    from ldm_core.requests import InpaintRequest, SuperResRequest
    from ldm_core.stack import ModelStack
    ae = str(autoencoder / "shapes-autoencoder")
    (autoencoder / "shapes-autoencoder" / "model_index.json").write_text('{"_class_name": "AutoencoderKL"}')
    t2i = tmp_path / "t2i"
    train_main(["text2img", "--out", str(tmp_path / "t2i-run"), "--steps", "1", "--autoencoder", ae,
                "--export", str(t2i), "--max-length", "24", *T2I])
    # inpainting starts from the text-to-image weights, its 5 new input channels at zero
    train_main(["inpaint", "--out", str(tmp_path / "inp-run"), "--steps", "2", "--autoencoder", ae,
                "--init-from", str(t2i), "--latent-cache", str(tmp_path / "t2i-run" / "latents.safetensors"),
                "--export", str(autoencoder / "inp"), *T2I])
    train_main(["superres", "--out", str(tmp_path / "sr-run"), "--steps", "2", "--autoencoder", ae,
                "--export", str(autoencoder / "sr"), *T2I])
    import json
    assert json.loads((autoencoder / "inp" / "unet" / "config.json").read_text())["in_channels"] == 9
    assert json.loads((autoencoder / "sr" / "model_index.json").read_text())["unet"] == ["diffusers", "UNet2DModel"]
    cat = autoencoder / "catalog2.toml"
    cat.write_text('[[model]]\nname = "i"\ntask = "inpaint"\nsource = "inp"\npipeline = "InpaintPipeline"\nsteps = 2\n'
                   '[[model]]\nname = "s"\ntask = "superres"\nsource = "sr"\npipeline = "SuperResPipeline"\nsteps = 2\n')
    stack = ModelStack(Catalog.load(cat), device="cpu")
    img = Image.new("RGB", (64, 64), "white")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (10, 10, 30, 30))
    assert stack.run(InpaintRequest(image=img, mask=mask, prompt="a red circle")).images[0].size == (64, 64)
    assert stack.run(SuperResRequest(image=Image.new("RGB", (16, 16)))).images[0].size == (64, 64)


def test_masks_and_degradations():
    import random

    import numpy as np

    from ldm_core.data.shapes import sample_scene
    from ldm_core.train.conditioning import MASK_KINDS, degrade, random_mask
    s = sample_scene(3)
    for kind in MASK_KINDS:
        m = random_mask(s, random.Random(0), kind)
        assert m.shape == (64, 64) and m.dtype == bool and m.any()
    o = s.objects[0]
    assert any(random_mask(s, random.Random(k), "object")[o.y + o.size // 2, o.x + o.size // 2] for k in range(10))
    low = degrade(s.image, random.Random(0))
    assert low.shape == (16, 16, 3) and low.dtype == np.uint8
