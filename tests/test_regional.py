"""Regional prompts on text -> image (MultiDiffusion's masked combination of noise predictions,
`ldm_core/pipelines/regional.py`): the masks, the combination with guidance, the request's checks
and budget, and the round trips through the pipeline, the command line, the PNG, the box editor
and the HTTP API, on tiny random-weight models."""
import json

import httpx
import numpy as np
import pytest
import torch
from servers import webui

from ldm_core.__main__ import main
from ldm_core.limits import Limits
from ldm_core.pipelines.common import apply_guidance
from ldm_core.pipelines.regional import BASE_INSIDE, box_mask, region_masks, regional_model
from ldm_core.provenance import read_parameters
from ldm_core.requests import RequestError
from ldm_core.tasks.text2img import Region, Text2ImgRequest
from ldm_core.validation import validate

RIGHT = '[{"prompt": "a blue square", "box": [0.5, 0, 1, 1]}]'


def arr(img):
    return np.asarray(img, dtype=np.float64)


# ------------------------------------------------------------------ masks
def test_a_box_covers_its_cells_with_a_one_pixel_ramp():
    m = box_mask((0.25, 0.5, 0.75, 1.0), 8, 8, feather=0)          # cells 2..5 across, 4..7 down
    assert m[4:, 2:6].eq(1).all() and m.sum() == 16
    half = box_mask((0.0, 0.0, 0.3125, 1.0), 8, 8, feather=0)      # 2.5 cells wide: the third half covered
    assert half[0, :3].tolist() == [1.0, 1.0, 0.5] and half[:, 3:].eq(0).all()
    soft = box_mask((0.5, 0.0, 1.0, 1.0), 8, 8)                      # feathered: ramps over one cell each side
    assert soft[3, 7] == 1 and soft[3, 0:3].eq(0).all()
    assert 0 < soft[3, 3] < soft[3, 4] < 1


def test_masks_sum_to_one_and_the_base_prompt_rules_outside_the_boxes():
    masks = region_masks([(0.5, 0.0, 1.0, 1.0), (0.0, 0.0, 0.25, 0.25)], 8, 8)   # (1 + 2, h, w)
    assert masks.shape == (3, 8, 8)
    assert torch.allclose(masks.sum(0), torch.ones(8, 8))
    assert masks[0, 5, 2] == 1 and masks[1:, 5, 2].eq(0).all()               # outside every box: the base alone
    assert masks[1, 3, 7] == 1 and masks[0, 3, 7] == BASE_INSIDE              # deep inside: the box's own prompt
    overlap = region_masks([(0, 0, 1, 1), (0, 0, 1, 1)], 4, 4, feather=0)
    assert torch.allclose(overlap[1], overlap[2]) and torch.allclose(overlap[1:].sum(0), torch.ones(4, 4))


# ------------------------------------------------------------------ the combination, with guidance per region
def fake_unet(x, cond_values):
    """A 'UNet' whose prediction for batch row r is x + the scalar its prompt encodes."""
    return x + cond_values.view(-1, 1, 1, 1)


@pytest.mark.parametrize("do_cfg", [True, False])
def test_each_region_gets_its_own_guided_prediction(do_cfg):
    b, scale = 2, 5.0
    masks = region_masks([(0.5, 0.0, 1.0, 1.0)], 8, 8, feather=0)
    uncond, base, region = 0.1, 1.0, -3.0                      # what each prompt's prediction adds
    cond = torch.tensor([uncond] * b * do_cfg + [base] * b + [region] * b)
    model = regional_model(lambda x, t: fake_unet(x, cond), masks, do_cfg)
    x = torch.randn(b, 4, 8, 8)
    out = model(torch.cat([x, x]) if do_cfg else x, 0)
    guided = apply_guidance(out, scale) if do_cfg else out
    per_region = [x + uncond + scale * (p - uncond) if do_cfg else x + p for p in (base, region)]
    assert torch.allclose(guided[..., :4], per_region[0][..., :4], atol=1e-5)     # left half: the base prompt
    assert torch.allclose(guided[..., 4:], per_region[1][..., 4:], atol=1e-5)     # right half: the region's


# ------------------------------------------------------------------ the pipeline on a tiny model
def test_no_regions_and_empty_regions_draw_the_same_image(stack):
    plain = stack.run(Text2ImgRequest(prompt="a red circle", seed=3)).images[0]
    empty = stack.run(Text2ImgRequest(prompt="a red circle", seed=3, regions="[]")).images[0]
    assert np.array_equal(arr(plain), arr(empty))


def test_a_region_with_the_base_prompt_changes_nothing(stack):
    """All predictions equal, so the masked mean is the plain prediction (float noise of a larger batch only)."""
    plain = stack.run(Text2ImgRequest(prompt="a red circle", seed=4, num_images=2)).images
    same = stack.run(Text2ImgRequest(prompt="a red circle", seed=4, num_images=2,
                                     regions='[{"prompt": "a red circle", "box": [0.2, 0.1, 0.9, 0.6]}]')).images
    for a, b in zip(plain, same):
        assert np.abs(arr(a) - arr(b)).max() <= 2


@pytest.mark.parametrize("model", ["tiny-text2img", "tiny-compvis-text2im"])
def test_a_region_prompt_changes_mostly_its_box(stack, model):
    """On the latent grid (8 x 8 here) the left half, outside the box and its one-cell ramp, moves a
    tenth as much as the right half; the decoder spreads it some, but the right half still changes more."""
    pipe = stack.load(model)
    kw = dict(prompt="a red circle", num_inference_steps=4, guidance_scale=7.0, sampler="DDIM", height=32, width=32,
              seeds=[5, 6])
    plain = pipe(**kw, output_type="latent").images                                     # (2, 4, 8, 8)
    moved = (pipe(**kw, output_type="latent", regions=[("a blue square", (0.5, 0, 1, 1))]).images - plain).abs()
    left, right = moved[..., :3].mean().item(), moved[..., 4:].mean().item()
    assert right > 10 * left, (left, right)
    req = dict(prompt="a red circle", seed=5, model=model, guidance_scale=7.0, sampler="DDIM")
    result = stack.run(Text2ImgRequest(**req, regions=RIGHT))
    diff = np.abs(arr(result.images[0]) - arr(stack.run(Text2ImgRequest(**req)).images[0])).mean(axis=(0, 2))
    assert diff[20:].mean() > 1.5 * diff[:12].mean(), diff.round(1)                      # per column, 32 px
    assert result.info["regions"] == [{"prompt": "a blue square", "box": [0.5, 0.0, 1.0, 1.0]}]


def test_a_long_region_prompt_is_named_in_the_warnings(stack):
    long = "a blue square " * 20                                   # the tiny tokenizer reads 24 tokens
    r = stack.run(Text2ImgRequest(prompt="a red circle", seed=1,
                                  regions=[Region(long, (0.0, 0.0, 0.5, 0.5))]))
    assert any(w.startswith("a region's prompt is") for w in r.info["warnings"]), r.info.get("warnings")


def test_regions_ride_along_with_deepcache_hires_and_the_xyplot(service, stack):
    from ldm_core.compositions.xyplot import Axis, XYPlotRequest
    cached = stack.run(Text2ImgRequest(prompt="a red circle", seed=2, regions=RIGHT, speedups="deepcache"))
    assert cached.info["speedups"].startswith("deepcache") and cached.info["regions"]
    hires = service.run(Text2ImgRequest(prompt="a red circle", seed=2, regions=RIGHT, hires=True))
    assert hires.images[0].size == (128, 128) and hires.info["regions"] == json.loads(RIGHT)
    plot = service.run(XYPlotRequest(Text2ImgRequest(prompt="a red circle", regions=RIGHT), Axis("seed", "1, 2")))
    cell = stack.run(Text2ImgRequest(prompt="a red circle", seed=2, regions=RIGHT)).images[0]
    assert plot.info["regions"] == json.loads(RIGHT)
    assert np.array_equal(arr(plot.images[0].crop((128, 48, 256, 176))), arr(cell.resize((128, 128), 0)))


# ------------------------------------------------------------------ the request's checks and its budget
@pytest.mark.parametrize("regions, message", [
    ('[{"prompt": "a", "box": [0.5, 0, 1.2, 1]}]', "coordinates must lie in [0, 1]"),
    ('[{"prompt": "a", "box": [0.5, 0, 0.5, 1]}]', "zero or negative area"),
    ('[{"prompt": "  ", "box": [0, 0, 1, 1]}]', "its prompt is empty"),
    ('[{"prompt": "a", "box": [0, 0, 1]}]', "four numbers"),
    ('[{"label": "a", "box": [0, 0, 1, 1]}]', '"prompt" and "box" keys'),
    ('[{"prompt": 3, "box": [0, 0, 1, 1]}]', "region 1's prompt must be text"),
    ('{"prompt": "a"}', "must be a JSON list"),
    ('[{"prompt": "a", ', "not valid JSON"),
    (json.dumps([{"prompt": "a", "box": [0, 0, 1, 1]}] * 9), "9 regions given; at most 8"),
])
def test_bad_regions_are_refused_with_what_would_fit(stack, regions, message):
    with pytest.raises(RequestError, match=message.replace("[", r"\[").replace("]", r"\]")):
        validate(Text2ImgRequest(prompt="a red circle", regions=regions), stack.catalog)


def test_each_region_counts_against_the_compute_budget(stack):
    two_regions = json.dumps([{"prompt": "b", "box": [0, 0, 0.5, 0.5]}, {"prompt": "c", "box": [0.5, 0.5, 1, 1]}])
    plain = validate(Text2ImgRequest(prompt="a", guidance_scale=3.0), stack.catalog).work
    two = validate(Text2ImgRequest(prompt="a", guidance_scale=3.0, regions=two_regions), stack.catalog).work
    assert two.megapixel_steps == pytest.approx(plain.megapixel_steps * 2)     # 4 UNet passes a step, not 2
    unguided = validate(Text2ImgRequest(prompt="a", guidance_scale=1.0, regions=RIGHT), stack.catalog).work
    assert unguided.megapixel_steps == pytest.approx(plain.megapixel_steps * 2)  # 2 passes, not 1
    assert "x 2 UNet passes a step" in two.how
    budget = Limits(max_work=plain.megapixel_steps * 1.5)
    validate(Text2ImgRequest(prompt="a", guidance_scale=3.0), stack.catalog, budget)
    with pytest.raises(RequestError, match="UNet passes a step.*compute budget"):
        validate(Text2ImgRequest(prompt="a", guidance_scale=3.0, regions=two_regions), stack.catalog, budget)


# ------------------------------------------------------------------ command line and PNG, box editor
def test_command_line_regions_reach_the_png(tiny_catalog, tmp_path, capsys):
    base = ["--models", str(tiny_catalog), "--device", "cpu", "--outdir", str(tmp_path)]
    assert main([*base, "text2img", "a red circle", "--seed", "2", "--regions", RIGHT]) == 0
    assert main([*base, "text2img", "a red circle", "--seed", "2"]) == 0
    paths = [p for p in capsys.readouterr().out.split() if p.endswith(".png")]
    with_regions, without = (read_parameters(p) for p in paths)
    assert with_regions["regions"] == [{"prompt": "a blue square", "box": [0.5, 0.0, 1.0, 1.0]}]
    assert without["regions"] == []
    assert main([*base, "text2img", "a", "--regions", '[{"prompt": "", "box": [0, 0, 1, 1]}]']) == 2
    assert "its prompt is empty" in capsys.readouterr().err


def test_the_box_editor_round_trips_a_results_regions():
    from tabs.text2img import annotation_to_regions, make_request, regions_text, regions_to_annotation
    info = [{"prompt": "a blue square", "box": [0.5, 0.0, 1.0, 1.0]}, {"prompt": "sky", "box": [0.0, 0.0, 1.0, 0.25]}]
    value = regions_to_annotation(info)
    assert all(b["color"].startswith("rgb(") for b in value["boxes"])     # a string: the annotator reads it back
    assert [{"prompt": r.prompt, "box": list(r.box)} for r in annotation_to_regions(value)] == info
    assert json.loads(regions_text(value)) == info
    assert make_request({"prompt": "a", "regions": value}).regions == annotation_to_regions(value)
    value["boxes"][1]["label"] = " "
    with pytest.raises(RequestError, match="box 2 has no prompt"):
        make_request({"prompt": "a", "regions": value})
    assert regions_to_annotation([])["boxes"] == [] and annotation_to_regions(None) == []


# ------------------------------------------------------------------ the HTTP API
@pytest.fixture(scope="module")
def server(tiny_catalog, tmp_path_factory):
    with webui(tiny_catalog, tmp_path_factory.mktemp("regional") / "out") as s:
        yield s


def test_the_api_takes_regions_last_with_a_default(server):
    from gradio_client import Client
    client = Client(server.url, verbose=False)
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/text2img"]["parameters"]
    assert api[-3]["parameter_name"] == "speedups" and api[-2]["parameter_name"] == "regions"
    assert api[-2]["parameter_has_default"] and api[-2]["parameter_default"] == "[]"
    assert api[-1]["parameter_name"] == "plan_layout" and api[-1]["parameter_default"] == ""   # gained after
    images, info = client.predict(prompt="a red circle", seed=7, regions=RIGHT, api_name="/text2img")
    assert json.loads(info)["regions"] == json.loads(RIGHT)
    assert read_parameters(images[0]["image"])["regions"] == json.loads(RIGHT)
    _, info = client.predict(prompt="a red circle", seed=7, api_name="/text2img")        # left out: none
    assert json.loads(info)["regions"] == []
    # raw HTTP sends every parameter in /gradio_api/info's order (docs/api.md)
    data = ["a red circle", "", 2, 3.0, 1, 1, 32, 32, "DDIM", "tiny-text2img", False, "", "", RIGHT, ""]
    r = httpx.post(server.url + "gradio_api/call/text2img", json={"data": data}, timeout=60)
    text = httpx.get(server.url + f"gradio_api/call/text2img/{r.json()['event_id']}", timeout=120).text
    assert "event: complete" in text and "a blue square" in text
    r = httpx.post(server.url + "gradio_api/call/text2img", json={"data": [*data[:-2], '[{"prompt": "x"}]', ""]},
                   timeout=60)
    text = httpx.get(server.url + f"gradio_api/call/text2img/{r.json()['event_id']}", timeout=120).text
    assert "event: error" in text and '\\"prompt\\" and \\"box\\" keys' in text and "Traceback" not in text
