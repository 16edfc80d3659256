"""Training stages on tiny configs: a few steps, resume, export, and the export runs in the studio."""
import json

import pytest

from ldm_core.train.__main__ import main as train_main

AE = ["--channels", "8", "16", "16", "--batch-size", "4", "--log-every", "1", "--threads", "1"]
SR = ["--channels", "32", "32", "32", "--head-dim", "8", "--num-scenes", "64", "--batch-size", "4", "--log-every", "1",
      "--eval-prompts-per-form", "1", "--threads", "1"]
T2I = [*SR, "--text-hidden", "32", "--text-layers", "1"]   # text2img and inpaint


def trained_steps(run) -> list[int]:
    """The steps a diffusion run logged a loss for (log_every 1: every step it trained)."""
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "loss" in r]


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
    from ldm_core.stack import ModelStack
    from ldm_core.tasks.text2img import Text2ImgRequest
    (autoencoder / "shapes-autoencoder" / "model_index.json").write_text('{"_class_name": "AutoencoderKL"}')
    export = autoencoder / "shapes-text2img"
    train_main(["text2img", "--out", str(tmp_path / "run"), "--steps", "2", "--autoencoder",
                str(autoencoder / "shapes-autoencoder"), *T2I])
    # resume: continues from the checkpoint at step 2 and exports at 3
    train_main(["text2img", "--out", str(tmp_path / "run"), "--steps", "3", "--autoencoder",
                str(autoencoder / "shapes-autoencoder"), "--export", str(export), *T2I])
    assert json.loads((tmp_path / "run" / "checkpoint" / "trainer.json").read_text())["step"] == 3
    assert trained_steps(tmp_path / "run") == [1, 2, 3]                        # no step trained twice
    assert (tmp_path / "run" / "samples.png").is_file()
    assert (export / "unet" / "config.json").is_file() and not (tmp_path / "run" / "latest_export").exists()
    index = json.loads((export / "model_index.json").read_text())
    assert index["_shared"] == {"vae": "shapes-autoencoder"}
    # the relation options: balanced relation batches, captions said both ways, the attention loss
    train_main(["text2img", "--out", str(tmp_path / "rel"), "--steps", "1", "--autoencoder",
                str(autoencoder / "shapes-autoencoder"),
                "--latent-cache", str(tmp_path / "run" / "latents.safetensors"),
                "--relation-share", "0.5", "--relation-converse", "0.5", "--attention-loss", "0.1", *T2I])
    row = json.loads((tmp_path / "rel" / "log.jsonl").read_text().splitlines()[0])
    assert row["loss_aux"] > 0
    cat = autoencoder / "catalog.toml"
    cat.write_text('[[model]]\nname = "t"\ntask = "text2img"\nsource = "shapes-text2img"\n'
                   'pipeline = "Text2ImgPipeline"\nsteps = 3\n')
    r = ModelStack(Catalog.load(cat), device="cpu").run(Text2ImgRequest(prompt="a red circle", seed=1))
    assert r.images[0].size == (64, 64)


def test_inpaint_and_superres_stages_train_export_and_run(autoencoder, tmp_path):
    from PIL import Image

    from ldm_core.catalog import Catalog
    from ldm_core.stack import ModelStack
    from ldm_core.tasks.inpaint import InpaintRequest
    from ldm_core.tasks.superres import SuperResRequest
    ae = str(autoencoder / "shapes-autoencoder")
    (autoencoder / "shapes-autoencoder" / "model_index.json").write_text('{"_class_name": "AutoencoderKL"}')
    t2i = tmp_path / "t2i"
    train_main(["text2img", "--out", str(tmp_path / "t2i-run"), "--steps", "1", "--autoencoder", ae,
                "--export", str(t2i), "--max-length", "24", *T2I])
    # inpainting starts from the text-to-image weights, its 5 new input channels at zero
    inp = ["inpaint", "--out", str(tmp_path / "inp-run"), "--autoencoder", ae, "--init-from", str(t2i),
           "--latent-cache", str(tmp_path / "t2i-run" / "latents.safetensors"), *T2I]
    train_main([*inp, "--steps", "1"])
    train_main([*inp, "--steps", "2", "--export", str(autoencoder / "inp")])   # resumed at step 1
    sr = ["superres", "--out", str(tmp_path / "sr-run"), "--autoencoder", ae, *SR]
    train_main([*sr, "--steps", "1"])
    train_main([*sr, "--steps", "2", "--export", str(autoencoder / "sr")])     # resumed at step 1
    for run in ("inp-run", "sr-run"):
        assert trained_steps(tmp_path / run) == [1, 2]
        rows = [json.loads(x) for x in (tmp_path / run / "log.jsonl").read_text().splitlines()]
        assert sum("eval_s" in r for r in rows) == 2                          # measured at the end of each call
    assert {"acc_inpaint_object", "inpaint_outside_psnr"} <= set(json.loads(
        (tmp_path / "inp-run" / "log.jsonl").read_text().splitlines()[-1]))
    assert json.loads((autoencoder / "inp" / "unet" / "config.json").read_text())["in_channels"] == 9
    assert json.loads((autoencoder / "sr" / "model_index.json").read_text())["unet"] == ["diffusers", "UNet2DModel"]
    cat = autoencoder / "catalog2.toml"
    cat.write_text('[[model]]\nname = "i"\ntask = "inpaint"\nsource = "inp"\npipeline = "InpaintPipeline"\nsteps = 2\n'
                   '[[model]]\nname = "s"\ntask = "superres"\nsource = "sr"\npipeline = "SuperResPipeline"\n'
                   'steps = 2\n')
    stack = ModelStack(Catalog.load(cat), device="cpu")
    img = Image.new("RGB", (64, 64), "white")
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (10, 10, 30, 30))
    assert stack.run(InpaintRequest(image=img, mask=mask, prompt="a red circle")).images[0].size == (64, 64)
    assert stack.run(SuperResRequest(image=Image.new("RGB", (16, 16)))).images[0].size == (64, 64)
    # --bicubic-latent widens the SR UNet by the latent channels (zero at first) and the pipeline feeds them
    train_main(["superres", "--out", str(tmp_path / "sr2-run"), "--steps", "1", "--autoencoder", ae,
                "--init-from", str(autoencoder / "sr"), "--bicubic-latent", "--export", str(autoencoder / "sr2"),
                "--latent-cache", str(tmp_path / "sr-run" / "latents.safetensors"), *SR])
    assert json.loads((autoencoder / "sr2" / "unet" / "config.json").read_text())["in_channels"] == 11
    cat.write_text('[[model]]\nname = "s"\ntask = "superres"\nsource = "sr2"\npipeline = "SuperResPipeline"\n'
                   'steps = 2\n')
    out = ModelStack(Catalog.load(cat), device="cpu").run(SuperResRequest(image=Image.new("RGB", (16, 16))))
    assert out.images[0].size == (64, 64)


def test_each_stage_takes_only_its_own_options(tmp_path, capsys):
    """A stage's config holds its own options: another stage's option is refused on the command line."""
    import dataclasses

    from ldm_core.train.inpaint import InpaintConfig
    from ldm_core.train.superres import SuperResConfig
    from ldm_core.train.text2img import Text2ImgConfig
    for stage, option in (("inpaint", "--bicubic-latent"), ("text2img", "--bicubic-latent"),
                          ("text2img", "--photo-fraction"), ("superres", "--grounding-fraction"),
                          ("superres", "--text-hidden"), ("inpaint", "--grounding-fraction")):
        with pytest.raises(SystemExit):
            train_main([stage, "--out", str(tmp_path / "x"), "--steps", "1", option, "1"])
        assert option in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    names = {cls: {f.name for f in dataclasses.fields(cls)} for cls in (Text2ImgConfig, InpaintConfig, SuperResConfig)}
    assert not names[Text2ImgConfig] & {"photo_fraction", "degrade_p", "bicubic_latent", "photo_rotate", "task"}
    assert "grounding_fraction" not in names[InpaintConfig] | names[SuperResConfig]
    assert "text_hidden" not in names[SuperResConfig]
    # the defaults the built-in models were trained with
    assert (Text2ImgConfig().max_length, InpaintConfig().max_length, Text2ImgConfig().layout_fraction) == (80, 24, 0.4)
    assert (Text2ImgConfig().caption_dropout, InpaintConfig().caption_dropout) == (0.1, 0.3)
    assert SuperResConfig().degrade_p == 0.5 and Text2ImgConfig().warmup == 200 and SuperResConfig().steps == 20000


def test_masks_and_degradations():
    import random

    import numpy as np

    from ldm_core.data.degrade import degrade
    from ldm_core.data.masks import MASK_KINDS, random_mask
    from ldm_core.data.shapes import draw_objects, sample_scene
    s = sample_scene(3)
    for kind in MASK_KINDS:
        m = random_mask(s, random.Random(0), kind)
        assert m.shape == (64, 64) and m.dtype == bool and m.any()
    o = s.objects[0]
    assert any(random_mask(s, random.Random(k), "object")[o.y + o.size // 2, o.x + o.size // 2] for k in range(10))
    # object masks: every style covers every pixel of the object it was drawn around, and only styles
    # that paint (ellipse, brush) follow the object's outline
    from ldm_core.data.masks import OBJECT_MASK_STYLES, object_mask
    for seed in range(12):
        sc = sample_scene(100 + seed, "three")
        for j, ob in enumerate(sc.objects):
            alone = (draw_objects([ob]) < 255).any(-1)
            for style in OBJECT_MASK_STYLES:
                m = object_mask(sc, random.Random(seed), j, style)
                assert m[alone].all(), (seed, j, style)
                assert np.array_equal(m, object_mask(sc, random.Random(seed), j, style))
    with pytest.raises(ValueError, match="unknown object mask style"):
        object_mask(s, random.Random(0), 0, "lasso")
    assert random_mask(s, random.Random(0), "object-any").any()
    low = degrade(s.image, random.Random(0))
    assert low.shape == (16, 16, 3) and low.dtype == np.uint8
    # p sets how often blur and noise are added: p = 0 is plain bicubic, p = 1 always differs from it
    plain = [degrade(s.image, random.Random(k), bicubic_only=True) for k in range(8)]
    assert all(np.array_equal(degrade(s.image, random.Random(k), p=0.0), b) for k, b in enumerate(plain))
    assert not any(np.array_equal(degrade(s.image, random.Random(k), p=1.0), b) for k, b in enumerate(plain))


def test_coordinate_channels_and_photo_mix(autoencoder, tmp_path):
    """Coordinate maps: a committed model widens to take them (new channels at zero), trains, and
    the studio's pipeline feeds them. Photo crops mix into the autoencoder and superres batches."""
    import numpy as np
    import torch

    from ldm_core.catalog import Catalog
    from ldm_core.data.photos import heldout_crops, photos, random_crops
    from ldm_core.pipelines.common import coord_maps
    from ldm_core.stack import ModelStack
    from ldm_core.tasks.layout2img import Layout2ImgRequest
    from ldm_core.tasks.superres import SuperResRequest
    ae = str(autoencoder / "shapes-autoencoder")
    (autoencoder / "shapes-autoencoder" / "model_index.json").write_text('{"_class_name": "AutoencoderKL"}')
    t2i, t2i_xy = tmp_path / "t2i", tmp_path / "t2i-xy"
    train_main(["text2img", "--out", str(tmp_path / "a"), "--steps", "1", "--autoencoder", ae, "--export", str(t2i),
                *T2I])
    train_main(["text2img", "--out", str(tmp_path / "b"), "--steps", "2", "--autoencoder", ae, "--init-from", str(t2i),
                "--coord-channels", "--workers", "2", "--max-minutes", "5", "--export", str(t2i_xy), *T2I])
    unet_cfg = json.loads((t2i_xy / "unet" / "config.json").read_text())
    assert unet_cfg["in_channels"] == 6
    with pytest.raises(ValueError, match="coord-channels"):   # a 6-channel model cannot lose its maps
        train_main(["text2img", "--out", str(tmp_path / "c"), "--steps", "1", "--autoencoder", ae,
                    "--init-from", str(t2i_xy), *T2I])
    m = coord_maps(torch.zeros(2, 4, 3, 5))
    assert m.shape == (2, 2, 3, 5) and m[0, 0, 0, 0] == -1 and m[0, 0, 0, -1] == 1 and m[0, 1, -1, 0] == 1

    # photo crops: deterministic, held-out photos never among the training ones
    a, b = (random_crops(3, np.random.default_rng(5)) for _ in range(2))
    assert a.shape == (3, 64, 64, 3) and (a == b).all()
    train_ids = {im.tobytes()[:4096] for im in photos("train")}
    assert photos("heldout") and not train_ids & {im.tobytes()[:4096] for im in photos("heldout")}
    assert heldout_crops(4).shape == (4, 64, 64, 3)
    assert photos("val") and not train_ids & {im.tobytes()[:4096] for im in photos("val")}
    plain, turned = random_crops(2, np.random.default_rng(6)), random_crops(2, np.random.default_rng(6), rotate=True)
    assert any(np.array_equal(turned[0], np.rot90(plain[0], k)) for k in range(4))
    with pytest.raises(ValueError, match="split"):
        photos("test")
    train_main(["autoencoder", "--out", str(tmp_path / "ae"), "--steps", "1", "--photo-fraction", "0.5",
                "--export", str(tmp_path / "photo-ae"), *AE])
    ev = json.loads((tmp_path / "photo-ae" / "eval.json").read_text())
    assert ev["heldout_photo_psnr_db"] > 0
    train_main(["autoencoder", "--out", str(tmp_path / "ae-bp"), "--steps", "1", "--photo-fraction", "0.5",
                "--init-from", str(tmp_path / "photo-ae"), "--freeze-encoder", "--back-projection", "3", *AE])
    rows = [json.loads(x) for x in (tmp_path / "ae-bp" / "log.jsonl").read_text().splitlines()]
    assert any(r.get("loss_bp", 0) < 0 for r in rows)
    sr = autoencoder / "sr-photo"
    train_main(["superres", "--out", str(tmp_path / "sr"), "--steps", "2", "--autoencoder", ae, "--photo-fraction",
                "0.5", "--photo-rotate", "--export", str(sr), *SR])
    rows = [json.loads(x) for x in (tmp_path / "sr" / "log.jsonl").read_text().splitlines()]
    assert any("sr_photo_psnr" in r for r in rows)
    train_main(["superres", "--out", str(tmp_path / "sr2"), "--steps", "1", "--autoencoder", ae, "--init-from",
                str(sr), "--export", str(sr), *SR])

    cat = autoencoder / "catalog3.toml"
    cat.write_text('[[model]]\nname = "xy"\ntask = "layout2img"\nsource = "' + str(t2i_xy.name) + '"\n'
                   'pipeline = "Layout2ImgPipeline"\nsteps = 2\n'
                   '[[model]]\nname = "s"\ntask = "superres"\nsource = "sr-photo"\n'
                   'pipeline = "SuperResPipeline"\nsteps = 2\n')
    import shutil
    shutil.copytree(t2i_xy, autoencoder / t2i_xy.name)
    stack = ModelStack(Catalog.load(cat), device="cpu")
    r = stack.run(Layout2ImgRequest(prompt="", boxes=[{"label": "red circle", "box": [0.1, 0.1, 0.5, 0.5]}]))
    assert r.images[0].size == (64, 64)
    from PIL import Image
    assert stack.run(SuperResRequest(image=Image.new("RGB", (16, 16)))).images[0].size == (64, 64)


def test_grounded_layout_training_widens_trains_and_serves_both_tabs(autoencoder, tmp_path):
    """--grounding-fraction: the text2img model widens by the grounding-map channels (zero-init),
    trains on captions and on boxes-as-maps, and the export serves text2img and layout2img."""
    import random

    import numpy as np

    from ldm_core.catalog import Catalog
    from ldm_core.grounding import GROUNDING_CHANNELS, GROUNDING_WORDS
    from ldm_core.stack import ModelStack
    from ldm_core.tasks.layout2img import Layout2ImgRequest
    from ldm_core.tasks.text2img import Text2ImgRequest
    from ldm_core.train.text2img import Text2ImgConfig, grounding_batch
    ae = str(autoencoder / "shapes-autoencoder")
    (autoencoder / "shapes-autoencoder" / "model_index.json").write_text('{"_class_name": "AutoencoderKL"}')
    plain, grounded = tmp_path / "plain", autoencoder / "grounded"
    train_main(["text2img", "--out", str(tmp_path / "a"), "--steps", "1", "--autoencoder", ae, "--export", str(plain),
                *T2I])
    train_main(["text2img", "--out", str(tmp_path / "b"), "--steps", "2", "--autoencoder", ae,
                "--init-from", str(plain),
                "--grounding-fraction", "0.5", "--export", str(grounded), *T2I])
    assert json.loads((grounded / "unet" / "config.json").read_text())["in_channels"] == 4 + GROUNDING_CHANNELS
    rows = [json.loads(x) for x in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert any("acc_layout_box" in r for r in rows)     # layout accuracy measured during training

    meta = [{"boxes": [{"label": "red circle", "box": [0.0, 0.0, 0.25, 0.25]}]}] * 4
    cfg = Text2ImgConfig(grounding_fraction=0.5, label_dropout=0.0)
    maps = grounding_batch(meta, [0, 1, 2, 3], [0.1, 0.9, 0.4, 0.6], cfg, random.Random(0))
    assert maps[[1, 3]].abs().sum() == 0 and (maps[[0, 2], -1, :4, :4] == 1).all()
    assert (maps[0, GROUNDING_WORDS.index("red"), :4, :4] == 1).all()
    cfg.label_dropout = 1.0                               # every box loses its colour
    maps = grounding_batch(meta, [0], [0.1], cfg, random.Random(0))
    assert maps[0, :len(GROUNDING_WORDS) - 4].abs().sum() == 0 and maps[0, GROUNDING_WORDS.index("circle")].sum() == 16

    cat = autoencoder / "catalog-grounded.toml"
    cat.write_text('[[model]]\nname = "l"\ntask = "layout2img"\nsource = "grounded"\npipeline = "Layout2ImgPipeline"\n'
                   'steps = 2\n[[model]]\nname = "t"\ntask = "text2img"\nsource = "grounded"\n'
                   'pipeline = "Text2ImgPipeline"\nsteps = 2\n')
    stack = ModelStack(Catalog.load(cat), device="cpu")
    box = [{"label": "red circle", "box": [0.1, 0.1, 0.5, 0.5]}]
    a = stack.run(Layout2ImgRequest(prompt="", boxes=box, seed=1)).images[0]
    b = stack.run(Layout2ImgRequest(prompt="", boxes=[{"label": "blue square", "box": [0.5, 0.5, 0.9, 0.9]}],
                                    seed=1)).images[0]
    assert a.size == (64, 64) and np.asarray(a).shape == np.asarray(b).shape
    assert stack.run(Text2ImgRequest(prompt="a red circle", seed=1)).images[0].size == (64, 64)


def test_inpaint_batches_prompt_the_masked_object_alone(monkeypatch):
    """--object-masks / --object-prompt: a share of the masks go around one object and, of those, a
    share is prompted with that object's label; the rest keep the caption (or nothing, when dropped)."""
    import random
    from types import SimpleNamespace

    import torch

    from ldm_core.data.shapes import sample_scene
    from ldm_core.train import inpaint
    cfg = inpaint.InpaintConfig(object_masks=1.0, object_prompt=1.0, caption_dropout=0.0)
    rng = random.Random(0)
    for i in range(20):
        s = sample_scene(i)
        m, label = inpaint.draw_mask(cfg, s, rng)
        o = next(o for o in s.objects if o.label == label)
        assert m[o.y + o.size // 2, o.x + o.size // 2]
    assert inpaint.draw_mask(inpaint.InpaintConfig(), sample_scene(0), rng)[1] is None
    seen = {}
    monkeypatch.setattr(inpaint, "tokenize", lambda tok, texts, n, device: seen.setdefault("texts", texts))
    monkeypatch.setattr(inpaint, "masked_inputs", lambda vae, masks, scenes, device: masks)
    data = SimpleNamespace(meta=[{"caption": sample_scene(i).caption} for i in range(8)],
                           latents=torch.zeros(8, 4, 16, 16), vae=None, device=torch.device("cpu"))
    for c, want in [(cfg, lambda i: {f"a {o.label}" for o in sample_scene(i).objects}),
                    (inpaint.InpaintConfig(caption_dropout=0.0), lambda i: {sample_scene(i).caption})]:
        seen.clear()
        b = inpaint.make_batch(c, data, None, torch.arange(8), torch.Generator().manual_seed(0), random.Random(0))
        assert b.extra.shape == (8, 1, 64, 64)
        assert all(t in want(i) for i, t in enumerate(seen["texts"]))


def test_relation_batches_are_balanced_and_said_both_ways():
    from collections import Counter

    import torch

    from ldm_core.data.shapes import RELATIONS, sample_scene
    from ldm_core.train.text2img import Text2ImgConfig, rebalance, relation_groups, say_converse
    assert say_converse("a red circle left of a blue square") == "a blue square right of a red circle"
    assert say_converse("a green diamond above a cyan triangle") == "a cyan triangle below a green diamond"
    meta = [{"caption": s.caption, "form": s.form} for s in (sample_scene(i) for i in range(2000))]
    groups = relation_groups(meta)
    assert [len(g) > 0 for g in groups] == [True] * 4
    cfg = Text2ImgConfig(relation_share=0.5)
    gen = torch.Generator().manual_seed(0)
    picked = Counter()
    for _ in range(200):
        idx = rebalance(cfg, groups, torch.randint(0, 2000, (32,), generator=gen), gen)
        assert len(idx) == 32
        for i in idx[:16].tolist():
            assert meta[i]["form"] == "relation"
            picked[next(r for r in RELATIONS if f" {r} " in meta[i]["caption"])] += 1
    assert min(picked.values()) > 0.2 * 3200   # each relation about a quarter of the 3,200 picks


def test_a_cpu_clock_budget_does_not_run_while_the_process_waits():
    """--cpu-clock: max_minutes counts this process's CPU time, so time spent waiting (a machine shared
    with other jobs) does not use the budget up; a wall-clock budget does."""
    import time

    from ldm_core.train.loop import Budget
    cpu, wall = Budget(10**6, 0.1 / 60, cpu_clock=True), Budget(10**6, 0.1 / 60)
    time.sleep(0.2)
    assert wall.time_up() and not cpu.time_up() and cpu.progress(0) < 0.5
    t = time.monotonic()
    while not cpu.time_up():
        assert time.monotonic() - t < 5
    assert cpu.progress(0) == 1.0


def test_attention_loss_ties_object_words_to_their_boxes(tmp_path):
    import torch

    from ldm_core.text import build_tokenizer
    from ldm_core.train.attention_loss import AttentionLoss, box_cover, object_tokens
    from ldm_core.train.models import build_unet
    tok = build_tokenizer(24)
    boxes = [{"label": "red circle", "box": [0.0, 0.0, 0.5, 0.5]}, {"label": "blue square", "box": [0.5, 0.5, 1, 1]}]
    t = object_tokens(tok, ["a blue square right of a red circle", "a red circle and a red circle", ""],
                      [boxes, [boxes[0], boxes[0]], boxes], 24)
    # <bos> a blue square right of a red circle: "red circle" at 7-8, "blue square" at 2-3
    assert t.select[0, :, 0].nonzero().flatten().tolist() == [7, 8]
    assert t.select[0, :, 1].nonzero().flatten().tolist() == [2, 3]
    assert t.valid.tolist() == [[True, True, False], [False, False, False], [False, False, False]]
    cover = box_cover(torch.tensor([[[0.0, 0.0, 0.5, 0.5], [0.25, 0.0, 0.5, 1.0]]]), 4)   # (1, 2, 16)
    assert cover[0, 0].view(4, 4)[:2, :2].eq(1).all() and cover[0, 0].sum() == 4
    assert cover[0, 1].sum() == 4 and cover[0, 1].view(4, 4)[:, 1].eq(1).all()

    cfg = type("C", (), {"channels": (32, 32, 32), "layers_per_block": 1, "head_dim": 8, "text_hidden": 16})
    unet = build_unet(cfg, 4, 4)
    aux = AttentionLoss(unet, 1.0)
    x, cond = torch.randn(3, 4, 16, 16), torch.randn(3, 24, 16)
    plain = unet(x, torch.tensor([10, 10, 10]), encoder_hidden_states=cond).sample
    with aux.recording():
        rec = unet(x, torch.tensor([10, 10, 10]), encoder_hidden_states=cond).sample
    assert torch.allclose(plain, rec, atol=1e-5)          # recording computes the same attention
    assert len(aux.maps) >= 2
    loss = aux.loss(t)
    assert 0 < loss.item() < 1 and not aux.maps
    loss.backward()
    k = next(m for n, m in unet.named_modules() if n.endswith("attn2")).to_k.weight
    assert k.grad is not None and k.grad.abs().sum() > 0
    with torch.no_grad():                                 # not recording: nothing kept
        unet(x, torch.tensor([10, 10, 10]), encoder_hidden_states=cond)
    assert not aux.maps
