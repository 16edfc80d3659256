"""The unconditional and class-conditional stages on tiny configs (a few steps, resume, the exact
export layout the pipelines read), their data, and the class eval's accuracy."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ldm_core.train.__main__ import main as train_main

TINY = ["--channels", "32", "32", "--head-dim", "8", "--batch-size", "4", "--log-every", "1", "--threads", "1",
        "--autoencoder", "models/shapes-autoencoder", "--eval-steps", "2"]
SHARED = {"vae": "shapes-autoencoder"}


def test_unconditional_stage_trains_resumes_and_exports(tmp_path):
    from diffusers import DDPMScheduler, UNet2DModel
    run, export = tmp_path / "run", tmp_path / "shapes-uncond"
    args = ["unconditional", "--out", str(run), "--num-scenes", "16", "--eval-samples", "2", *TINY]
    train_main([*args, "--steps", "2"])
    train_main([*args, "--steps", "3", "--export", str(export)])      # resumes at 2
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    assert any("objects_per_image" in r for r in rows) and (run / "samples.png").is_file()
    assert json.loads((export / "model_index.json").read_text()) == {
        "_class_name": "UnconditionalPipeline", "vae": ["diffusers", "AutoencoderKL"],
        "unet": ["diffusers", "UNet2DModel"], "scheduler": ["diffusers", "DDPMScheduler"], "_shared": SHARED}
    unet = UNet2DModel.from_pretrained(export / "unet")
    assert unet.config.in_channels == 4 and unet.config.sample_size == 16
    weights = load_file(export / "unet" / "diffusion_pytorch_model.safetensors")
    assert {v.dtype for v in weights.values()} == {torch.float16}
    sched = DDPMScheduler.from_pretrained(export / "scheduler")
    assert sched.config.beta_schedule == "scaled_linear" and sched.config.num_train_timesteps == 1000


def test_class2img_stage_exports_a_class_embedder_the_unet_reads(tmp_path):
    from diffusers import UNet2DConditionModel

    from ldm_core.pipelines.class_embedder import ClassEmbedder
    from ldm_core.train.class2img import CLASS_NAMES
    from ldm_core.train.class_models import load_exported, sample_images
    export = tmp_path / "shapes-class2img"
    train_main(["class2img", "--out", str(tmp_path / "run"), "--num-scenes", "24", "--eval-seeds", "1",
                "--embed-dim", "16", "--steps", "2", "--export", str(export), *TINY])
    assert json.loads((export / "model_index.json").read_text()) == {
        "_class_name": "ClassConditionalPipeline", "vae": ["diffusers", "AutoencoderKL"],
        "unet": ["diffusers", "UNet2DConditionModel"], "class_embedder": ["ldm_core", "ClassEmbedder"],
        "scheduler": ["diffusers", "DDPMScheduler"], "_shared": SHARED}
    emb = ClassEmbedder.from_pretrained(export / "class_embedder")
    assert emb.config.n_classes == 25 and emb.config.null_class == 24 and emb.num_named_classes == 24
    assert emb.config.class_names == list(CLASS_NAMES) and list(CLASS_NAMES[:5]) == [
        "red circle", "red square", "red triangle", "red diamond", "yellow circle"]
    unet = UNet2DConditionModel.from_pretrained(export / "unet")
    assert unet.config.cross_attention_dim == emb.config.embed_dim == 16
    ctx = emb(torch.tensor([0, 24]))                                     # one context token per image
    assert ctx.shape == (2, 1, 16)
    out = unet.float()(torch.randn(2, 4, 16, 16), 10, encoder_hidden_states=ctx.float()).sample
    assert out.shape == (2, 4, 16, 16)
    parts = load_exported(export, autoencoder="models/shapes-autoencoder")
    images = sample_images(parts["vae"], parts["unet"], parts["scheduler"].config, [0, 1], [3, 5],
                           parts["class_embedder"], guidance=3.0, steps=2)
    assert images.shape == (2, 64, 64, 3) and images.dtype == np.uint8


def test_class_scenes_hold_only_objects_of_their_class():
    from ldm_core.data.detector import detect
    from ldm_core.train.class2img import CLASS_NAMES, class_scene, training_scene
    counts = set()
    for k in range(48):
        s = training_scene(k)
        assert {o.label for o in s.objects} == {CLASS_NAMES[k % 24]} and 1 <= len(s.objects) <= 3
        assert s.caption == CLASS_NAMES[k % 24]
        counts.add(len(s.objects))
        assert [d.label for d in detect(s.image)] == [CLASS_NAMES[k % 24]] * len(s.objects)
    assert counts == {1, 2, 3}
    assert np.array_equal(class_scene(5, 7).image, class_scene(5, 7).image)   # a pure function of the seed


@pytest.mark.parametrize("kind", ["perfect", "grey", "wrong"])
def test_class_accuracy_scores_renders_one_and_grey_zero(kind):
    from ldm_core.eval.classes import class_accuracy, class_labels, class_renders
    labels = class_labels(2)
    images = class_renders(labels, 123)
    if kind == "grey":
        images = np.full_like(images, 128)
    r = class_accuracy(images, labels if kind != "wrong" else [(y + 1) % 24 for y in labels])
    assert r["accuracy"] >= 0.9 if kind == "perfect" else r["accuracy"] == 0.0
    assert (r["objects_per_image"] == 0) == (kind == "grey")
