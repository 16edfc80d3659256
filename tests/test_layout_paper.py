"""The paper's layout-to-image model (§4.3, layout2img-openimages256) on a tiny random-weight stand-in
(`tiny-paper-layout`, ldm_core/testing_noise.py: VQModel f=4, LDMBertModel over 8192 ids at 92 positions,
a 3-level cross-attention UNet, DDIM): the token layout against hand-worked examples of the original
builder's rules, its OpenImages class list, labels refused with close names, and the pipeline through
the service, the CLI and the API at the native size and an awkward one.

    OMP_NUM_THREADS=1 python -m pytest -q tests/test_layout_paper.py
"""
import json

import numpy as np
import pytest
from gradio_client import Client
from PIL import Image
from servers import webui

from ldm_core.__main__ import main
from ldm_core.pipelines.layout_tokens import (
    PAD,
    SECTIONS,
    SEQ_LEN,
    coordinate_token,
    corner_tokens,
    layout_tokens,
    object_token,
    openimages_classes,
)
from ldm_core.provenance import read_parameters
from ldm_core.requests import RequestError
from ldm_core.tasks.layout2img import Layout2ImgRequest

MODEL = "tiny-paper-layout"
CAR = [{"label": "Car", "box": [0.1, 0.2, 0.5, 0.9]}]


def _run(service, boxes=CAR, **kw):
    return service.run(Layout2ImgRequest(model=MODEL, boxes=json.dumps(boxes), seed=kw.pop("seed", 1), **kw))


# ---------------------------------------------------------------- the token layout, worked by hand
def test_coordinates_are_tokens_of_a_90_by_90_grid_rounded_as_python_rounds():
    assert SECTIONS == 90 and PAD == 8191 and SEQ_LEN == 92        # int(sqrt(8192)); no_tokens - 1; 30 * 3 + 2
    assert coordinate_token(0.0, 0.0) == 0
    assert coordinate_token(1.0, 1.0) == 89 * 90 + 89 == 8099
    assert coordinate_token(1.0, 0.0) == 89 and coordinate_token(0.0, 1.0) == 8010
    assert coordinate_token(0.5, 0.5) == 44 * 90 + 44           # 44.5 rounds to even: 44, as int(round(x))
    assert coordinate_token(0.25, 0.75) == 67 * 90 + 22         # x 22.25 -> 22, y 66.75 -> 67
    assert corner_tokens((-0.2, 0.0, 1.3, 1.0)) == (0, 8099)     # clamped to the picture


def test_an_object_is_its_class_and_flags_then_its_corners_then_pads_and_the_crop():
    n = 340
    assert object_token(5, n) == 5
    assert object_token(5, n, group_of=True) == 5 + 340 * 1
    assert object_token(5, n, occluded=True, inside=True) == 5 + 340 * (2 + 8)
    assert object_token(5, n, group_of=True, occluded=True, depiction=True, inside=True) == 5 + 340 * 15
    with pytest.raises(ValueError, match="unknown object flags"):
        object_token(5, n, truncated=True)
    # "Car" at x 0.1-0.5, y 0.2-0.9: top-left (8.9 -> 9, 17.8 -> 18), bottom-right (44.5 -> 44, 80.1 -> 80)
    car = openimages_classes().number("Car")
    tokens = layout_tokens([(car, (0.1, 0.2, 0.5, 0.9))], n)
    assert tokens[:3] == [car, 18 * 90 + 9, 80 * 90 + 44]
    assert tokens[3:90] == [PAD] * 87 and tokens[90:] == [0, 8099] and len(tokens) == 92   # 29 pad triples, crop
    two = layout_tokens([(car, (0.1, 0.2, 0.5, 0.9)), (0, (0, 0, 1, 1))], n, flags=[{}, {"group_of": True}])
    assert two[3:6] == [0 + 340, 0, 8099] and two[6:9] == [PAD] * 3             # the given order is kept
    with pytest.raises(ValueError, match="at most 30 boxes"):
        layout_tokens([(car, (0, 0, 1, 1))] * 31, n)


def test_the_class_list_is_numbered_as_the_training_data_numbered_it():
    classes = openimages_classes()
    assert len(classes.names) == 340 == len(set(classes.names))
    assert classes.names[0] == "Tortoise" and classes.mids[0] == "/m/011k07"
    assert classes.names[-1] == "Suitcase" and classes.mids[-1] == "/m/01s55n"   # moved last
    assert list(classes.mids[:-1]) == sorted(classes.mids[:-1])                   # the rest in MID order
    assert "Man" not in classes.names and classes.number("man") == classes.number("Person")   # merged classes
    assert classes.number("wall clock") == classes.number("Clock")
    assert classes.number("  TRAFFIC   light ") == classes.names.index("Traffic light")
    assert classes.close_names("doggy") == ["Dog"] and "Toy" in classes.close_names("cat toy")


def test_the_pipeline_feeds_the_tokens_to_its_encoder(stack):
    pipe = stack.load(MODEL)
    ids = pipe.tokens([("man", (0.1, 0.2, 0.5, 0.9))])
    assert ids.shape == (1, 92) and ids[0, 0].item() == openimages_classes().number("Person")
    assert pipe.encode_layout([("Car", (0, 0, 1, 1))], 3).shape == (3, 92, 32)
    with pytest.raises(ValueError, match="did you mean 'Dog'"):
        pipe.tokens([("doggy", (0, 0, 1, 1))])


# ---------------------------------------------------------------- requests
@pytest.mark.parametrize("kw, message", [
    (dict(boxes=[{"label": "doggy", "box": [0, 0, 1, 1]}]), r"box 1: this model does not know the label 'doggy'; "
                                                             r"did you mean 'Dog'\?"),
    (dict(boxes=[{"label": "zzqx", "box": [0, 0, 1, 1]}]), "names of 340 OpenImages classes"),
    (dict(guidance_scale=3.0), "trained without a null layout"),
    (dict(prompt="a car"), "no caption or negative prompt"),
    (dict(boxes=[]), "give at least one box"),
    (dict(width=40), "multiples of 16 for this model"),       # a multiple of 8, not of the UNet's 16
])
def test_what_the_model_cannot_take_is_refused_with_what_to_do(service, kw, message):
    with pytest.raises(RequestError, match=message):
        _run(service, **kw)


def test_labels_any_case_become_the_class_names_and_the_layout_steers_the_image(service):
    result = _run(service, boxes=[{"label": "  cAR ", "box": [0.1, 0.2, 0.5, 0.9]},
                                  {"label": "Woman", "box": [0.5, 0.1, 0.9, 0.9]}])
    assert [b["label"] for b in result.info["boxes"]] == ["Car", "Person"] and result.info["guidance_scale"] == 1.0
    again = _run(service, boxes=[{"label": "Car", "box": [0.1, 0.2, 0.5, 0.9]},
                                 {"label": "person", "box": [0.5, 0.1, 0.9, 0.9]}])
    assert np.array_equal(np.asarray(again.images[0]), np.asarray(result.images[0]))    # the same tokens
    other = _run(service, boxes=[{"label": "Tree", "box": [0.1, 0.2, 0.5, 0.9]}])
    assert not np.array_equal(np.asarray(other.images[0]), np.asarray(result.images[0]))


@pytest.mark.parametrize("size", [(32, 32), (48, 80)])        # native; wider, taller, not square
def test_the_service_runs_it_at_native_and_awkward_sizes(service, size):
    w, h = size
    result = _run(service, width=w, height=h, num_images=2, seed=7)
    assert [im.size for im in result.images] == [(w, h)] * 2 and result.info["seeds"] == [7, 8]
    assert result.info["scheduler"] == "DDIMScheduler" and result.info["model"] == MODEL


def test_the_cli_runs_it(tiny_catalog, tmp_path, capsys):
    base = ["--models", str(tiny_catalog), "--device", "cpu", "--outdir", str(tmp_path), "layout2img",
            "--model", MODEL, "--boxes", json.dumps(CAR), "--seed", "3"]
    for w, h in ((32, 32), (80, 48)):
        assert main([*base, "--width", str(w), "--height", str(h)]) == 0, capsys.readouterr().err
        path = [p for p in capsys.readouterr().out.split() if p.endswith(".png")][-1]
        params = read_parameters(path)
        assert Image.open(path).size == (w, h) and params["model"] == MODEL and params["boxes"][0]["label"] == "Car"
    assert main([*base, "--boxes", '[{"label": "doggy", "box": [0, 0, 1, 1]}]']) == 2
    assert "did you mean 'Dog'" in capsys.readouterr().err


def test_the_api_runs_it(tiny_catalog, tmp_path):
    with webui(tiny_catalog, tmp_path / "out", "--offline") as server:
        client = Client(server.url, verbose=False)
        for w, h in ((32, 32), (48, 80)):
            images, info = client.predict(boxes=json.dumps(CAR), model=MODEL, width=w, height=h, seed=2,
                                          api_name="/layout2img")
            info = json.loads(info)
            assert Image.open(images[0]["image"]).size == (w, h) and info["model"] == MODEL
            assert info["guidance_scale"] == 1.0 and info["boxes"][0]["label"] == "Car"   # the model's own default
        with pytest.raises(Exception, match="did you mean 'Dog'"):
            client.predict(boxes='[{"label": "doggy", "box": [0, 0, 1, 1]}]', model=MODEL, api_name="/layout2img")


def test_a_converted_checkpoint_joins_the_catalog_as_a_layout_model(tmp_path, monkeypatch):
    """A folder the user converted (`python -m ldm_core convert`) whose pipeline is PaperLayoutPipeline is a
    layout2img model at its native size (UNet sample size x the autoencoder's factor), without guidance."""
    from ldm_core import zoo
    from ldm_core.catalog import user_converted_entries
    from ldm_core.testing_noise import write_paper_layout_like
    monkeypatch.setenv("LDM_ZOO_DIR", str(tmp_path))
    folder = write_paper_layout_like(tmp_path / "my-layout")
    (folder / zoo.SOURCE_FILE).write_text(json.dumps({"file": "model.ckpt", "sha256": "0" * 64}))
    entry = {e.name: e for e in user_converted_entries()}["my-layout"]
    assert (entry.task, entry.pipeline, entry.width, entry.guided, entry.guidance) == \
        ("layout2img", "PaperLayoutPipeline", 64, False, 1.0)


def test_the_catalog_entry_validates_with_its_own_defaults():
    """The real catalog's layout2img-openimages256 (not loaded: validation reads the catalog only): its
    defaults pass the studio's limits, its labels are OpenImages classes, guidance stays 1."""
    from ldm_core.catalog import Catalog
    from ldm_core.validation import validate
    catalog = Catalog.load()
    req = Layout2ImgRequest(model="layout2img-openimages256", boxes=json.dumps([{"label": "boy", "box": [0, 0, 1, 1]}]))
    checked = validate(req, catalog).request
    assert (checked.width, checked.height, checked.steps, checked.sampler, checked.guidance_scale) == \
        (256, 256, 200, "DDIM", 1.0)
    assert checked.boxes[0].label == "Person"
    with pytest.raises(RequestError, match="trained without a null layout"):
        validate(Layout2ImgRequest(model="layout2img-openimages256", boxes=req.boxes, guidance_scale=5.0), catalog)
