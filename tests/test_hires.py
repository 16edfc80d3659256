"""Text -> image -> 4x in one request ("hires"), from the service, the command line and the PNG."""
from dataclasses import replace

import pytest

from ldm_core.__main__ import main
from ldm_core.limits import DEFAULT_LIMITS
from ldm_core.provenance import read_parameters
from ldm_core.service import Service
from ldm_core.tasks.layout2img import Layout2ImgRequest
from ldm_core.tasks.text2img import Text2ImgRequest
from ldm_core.requests import RequestError

BOXES = '[{"label": "red circle", "box": [0.1, 0.1, 0.5, 0.5]}]'


def test_each_image_is_upscaled_with_its_own_seed_and_both_stages_are_recorded(service, stack, tmp_path):
    steps = []
    r = service.run(Text2ImgRequest(prompt="a red circle", seed=5, num_images=2, hires=True,
                                  hires_model="tiny-superres", model="tiny-text2img"),
                  callback=lambda s: steps.append(s.total))
    assert [im.size for im in r.images] == [(128, 128)] * 2 and r.info["size"] == "128x128"
    assert r.info["hires"]["model"] == "tiny-superres" and r.info["hires_model"] == "tiny-superres"
    assert [p["seed"] for p in r.per_image] == [5, 6] and r.info["steps"] == 4
    assert steps.count(4) == 4 + 2 * 4          # the first stage's 4 steps, then 4 for each upscale
    saved = read_parameters(stack.save(r, tmp_path)[1])
    assert saved["hires"]["model"] == "tiny-superres" and saved["seed"] == 6 and saved["size"] == "128x128"


def test_without_a_model_the_catalogs_default_upscales_and_layouts_too(service):
    r = service.run(Layout2ImgRequest(boxes=BOXES, seed=1, hires=True, model="tiny-layout2img"))
    assert r.images[0].size == (128, 128) and r.info["hires"]["model"] == "tiny-superres"


def test_the_second_stage_counts_in_the_compute_budget(tiny_catalog):
    s = Service.from_catalog(tiny_catalog, device="cpu", limits=replace(DEFAULT_LIMITS, max_work=0.05))
    s.run(Text2ImgRequest(prompt="a", model="tiny-text2img"))                      # 32x32x4 steps: fits
    with pytest.raises(RequestError, match="then .* to upscale them 4x"):
        s.run(Text2ImgRequest(prompt="a", model="tiny-text2img", hires=True))


@pytest.mark.parametrize("bad, match", [({"hires_model": "tiny-text2img"}, "hires_model: unknown model"),
                                        ({"hires": "yes"}, "hires must be true or false"),
                                        ({"width": 1024, "height": 1024}, "hires upscales images of at most")])
def test_bad_hires_requests_say_what_is_wrong(service, bad, match):
    with pytest.raises(RequestError, match=match):
        service.run(Text2ImgRequest(prompt="a", model="tiny-text2img", **{"hires": True, **bad}))


def test_hires_from_the_command_line(tiny_catalog, tmp_path, capsys):
    assert main(["--models", str(tiny_catalog), "--device", "cpu", "--outdir", str(tmp_path), "text2img", "a",
                 "--hires", "--hires-model", "tiny-superres", "--seed", "2"]) == 0
    path = next(p for p in capsys.readouterr().out.split() if p.endswith(".png"))
    assert read_parameters(path)["hires"]["model"] == "tiny-superres"
