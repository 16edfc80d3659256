"""The learned caption -> layout stage (ldm_core/planner.py, compositions/grounded.py): the trained
planner on relation arrangements it never saw, and the stage in the request path on tiny models."""
from pathlib import Path

import numpy as np
import pytest

from ldm_core.compositions import COMPOSITIONS, composition_of
from ldm_core.data.judge import judge_caption
from ldm_core.data.shapes import sample_scene
from ldm_core.planner import PlannerError, load_planner, words_of
from ldm_core.provenance import read_parameters
from ldm_core.requests import RequestError
from ldm_core.service import Service
from ldm_core.tasks.text2img import Text2ImgRequest
from ldm_core.testing import write_tiny_catalog
from ldm_core.train.planner import HELD_OUT, PlannerTrainConfig, eval_scenes, held_out, plan_right, train

PLANNER = Path(__file__).resolve().parent.parent / "models" / "shapes-layout-planner"
PLANNED = """
[[model]]
name = "tiny-planned"
task = "text2img"
source = "tiny-text2img"
pipeline = "Text2ImgPipeline"
width = 32
height = 32
steps = 3
guidance = 3.0
planner = "{planner}"
layout_model = "{layout}"
plan_layout = {on}
"""


@pytest.fixture(scope="module")
def planner():
    return load_planner(PLANNER)


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    root = tmp_path_factory.mktemp("planned")
    base = write_tiny_catalog(root).read_text()
    extra = (PLANNED.format(planner=PLANNER, layout="tiny-layout2img", on="true")
             + PLANNED.format(planner=PLANNER, layout="tiny-gligen", on="false").replace("tiny-planned",
                                                                                          "tiny-planned-gligen"))
    (root / "planned.toml").write_text(base + extra)
    return Service.from_catalog(root / "planned.toml", device="cpu")


def test_the_trained_planner_places_relations_it_never_saw_in_training(planner):
    """Relation captions whose (relation word, first colour, second shape) were held out of training:
    the planned objects are the caption's, in order, 2 px apart, and the relation holds between them."""
    groups = eval_scenes(60)
    assert all(held_out(s) for s in groups["held_out"]) and not any(held_out(s) for s in groups["relation"])
    for name, least in (("held_out", 0.9), ("relation", 0.9), ("all_forms", 0.9)):
        right = [plan_right(s, planner.plan(s.caption, seed=i)) for i, s in enumerate(groups[name])]
        assert sum(right) / len(right) >= least, (name, sum(right), len(right))


def test_the_relation_word_decides_the_arrangement(planner):
    """One held-out pair, each relation word: the boxes move as the word says (the words are ids to the
    model; nothing here parses them)."""
    moved = []
    for _, colour, shape in HELD_OUT[:4]:
        for word, axis, sign in (("left of", 0, 1), ("right of", 0, -1), ("above", 1, 1), ("below", 1, -1)):
            caption = f"a {colour} circle {word} a green {shape}"
            for seed in range(3):
                (la, a), (lb, b) = planner.plan(caption, seed)
                assert (la, lb) == (f"{colour} circle", f"green {shape}"), caption
                moved.append(sign * ((b[axis] + b[axis + 2]) - (a[axis] + a[axis + 2])) / 2 * 64 >= 8)
    assert sum(moved) >= 0.9 * len(moved), f"{sum(moved)} of {len(moved)} arrangements as the word says"


def test_unknown_words_are_refused_by_name(planner):
    assert words_of("A red circle, left of") == ["a", "red", "circle", ",", "left", "of"]
    with pytest.raises(PlannerError, match="never saw the word.*'purple'"):
        planner.plan("a purple circle")


def test_the_stage_runs_before_hires_in_the_service():
    names = list(COMPOSITIONS)
    assert names.index("grounded") < names.index("hires")
    assert composition_of(Text2ImgRequest(prompt="a", hires=True)).name == "grounded"
    assert composition_of(Text2ImgRequest(prompt="a", hires=True, plan_layout="off")).name == "hires"


def test_a_planned_request_is_drawn_by_the_layout_model_and_recorded(studio, tmp_path):
    r = studio.run(Text2ImgRequest(prompt="a red circle left of a blue square", model="tiny-planned", seed=3))
    boxes = r.info["planned_boxes"]
    assert [b["label"] for b in boxes] == ["red circle", "blue square"]
    assert (boxes[0]["box"][0] + boxes[0]["box"][2]) < (boxes[1]["box"][0] + boxes[1]["box"][2])
    assert r.info["task"] == "text2img" and r.info["model"] == "tiny-planned"
    assert r.info["layout_model"] == "tiny-layout2img" and "boxes" not in r.info and r.info["seed"] == 3
    saved = read_parameters(studio.save(r)[0])
    assert saved["planned_boxes"] == boxes and saved["plan_layout"] == ""
    again = studio.run(Text2ImgRequest(prompt="a red circle left of a blue square", model="tiny-planned", seed=3))
    assert again.info["planned_boxes"] == boxes                 # one seed, one plan


def test_off_unknown_words_and_regions(studio):
    off = studio.run(Text2ImgRequest(prompt="a red circle", model="tiny-planned", plan_layout="off"))
    assert "planned_boxes" not in off.info and off.info.get("layout_model") is None
    skipped = studio.run(Text2ImgRequest(prompt="a purple circle", model="tiny-planned"))
    assert "planned_boxes" not in skipped.info and "purple" in skipped.info["layout_plan_skipped"]
    with pytest.raises(RequestError, match="plan_layout: .*'purple'"):
        studio.run(Text2ImgRequest(prompt="a purple circle", model="tiny-planned", plan_layout="on"))
    with pytest.raises(RequestError, match="regional prompts place their own boxes"):
        studio.run(Text2ImgRequest(prompt="a red circle", model="tiny-planned", plan_layout="on",
                                   regions='[{"prompt": "a red circle", "box": [0, 0, 0.5, 0.5]}]'))
    with pytest.raises(RequestError, match="has no layout stage"):
        studio.run(Text2ImgRequest(prompt="a red circle", model="tiny-text2img", plan_layout="on"))
    with pytest.raises(RequestError, match="plan_layout must be one of"):
        studio.run(Text2ImgRequest(prompt="a red circle", model="tiny-planned", plan_layout="yes"))


def test_a_hub_like_text_model_plans_for_gligen_and_hires_upscales(studio):
    """The same path with a GLIGEN box model (tiny, random), off by default, on when asked; with hires."""
    plain = studio.run(Text2ImgRequest(prompt="a red circle above a blue square", model="tiny-planned-gligen"))
    assert "planned_boxes" not in plain.info
    r = studio.run(Text2ImgRequest(prompt="a red circle above a blue square", model="tiny-planned-gligen",
                                   plan_layout="on", hires=True, seed=1))
    assert r.info["layout_model"] == "tiny-gligen" and len(r.info["planned_boxes"]) == 2
    assert r.images[0].size == (128, 128) and r.info["hires"]["model"] and r.per_image[0]["planned_boxes"]


def test_the_training_stage_runs_and_resumes(tmp_path):
    cfg = PlannerTrainConfig(out=str(tmp_path / "run"), steps=3, batch_size=8, width=32, ff=64, eval_captions=2,
                             export_captions=2, log_every=1, export=str(tmp_path / "export"))
    train(cfg)
    assert (tmp_path / "export" / "model.safetensors").exists() and (tmp_path / "export" / "eval.json").exists()
    cfg.steps = 5
    train(cfg)
    rows = (tmp_path / "run" / "log.jsonl").read_text()
    assert '"step": 5' in rows and '"step": 4' in rows and load_planner(tmp_path / "export").cfg.width == 32


@pytest.mark.skipif(not (PLANNER.parent / "shapes-text2img" / "model_index.json").is_file(),
                    reason="models/shapes-text2img not trained")
def test_the_built_in_model_draws_relations_through_the_stage_by_default():
    """The shipped catalog: relation captions, the stage on by default (the eval: docs/evaluation.md)."""
    studio = Service.from_catalog(device="cpu")
    right = []
    for i in range(8):
        scene = sample_scene(41_000_000 + i, "relation")
        r = studio.run(Text2ImgRequest(prompt=scene.caption, seed=i))
        assert r.info["model"] == "shapes-text2img" and len(r.info["planned_boxes"]) == 2
        right.append(judge_caption(scene, np.asarray(r.images[0]))["correct"])
    assert sum(right) >= 6, f"relation captions drawn right: {sum(right)} of 8 (without the stage: 34 %)"


def test_the_text2img_eval_runs_with_and_without_the_stage(studio):
    """`python -m ldm_core.eval text2img --plan-layout on|off`: the adapter goes through the stage as the
    service does, and the report judges the plans apart."""
    from ldm_core.eval.adapters import stack_text2img
    from ldm_core.eval.evaluate import evaluate_text2img, layout_stage_report
    for mode, planned in (("on", 1), ("off", 0)):
        generate = stack_text2img("tiny-planned", steps=2, catalog=str(studio.catalog.path), plan_layout=mode)
        _, _, res = evaluate_text2img(generate, n_per_form=1, with_fid=False)
        report = layout_stage_report(generate.plans, res)
        assert sum(p is not None for p in generate.plans) == 4 * planned
        assert ("plan right" in report) == bool(planned)
        if planned:
            relation = res["layout_stage"]["relation"]
            assert (relation["n"], relation["planned"], relation["plan_right"]) == (1, 1, 1)
