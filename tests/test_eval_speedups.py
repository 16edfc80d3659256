"""The eval CLI's --speedups (issue #28's quality guard): it reaches every request the stack adapters
build, and the report says what ran; unset, the catalog model's own default runs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ldm_core.eval.__main__ import main
from ldm_core.eval.adapters import stack_inpaint, stack_layout2img, stack_superres, stack_text2img

torch.set_num_threads(1)
DEEPCACHE = "deepcache (interval 3, branch 0)"


@pytest.mark.parametrize("speedups, ran", [("deepcache", DEEPCACHE), ("none", "none"), (None, "none")])
def test_the_adapters_put_speedups_into_every_request(stack, speedups, ran):
    img = Image.new("RGB", (32, 32), "white")
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    t2i = stack_text2img("tiny-text2img", 2, speedups=speedups, stack=stack)
    lay = stack_layout2img("tiny-layout2img", 2, stack=stack, speedups=speedups)
    inp = stack_inpaint("tiny-inpaint", 2, speedups=speedups, stack=stack)
    sr = stack_superres("tiny-superres", 2, speedups=speedups, stack=stack)
    assert t2i(["a red circle"], [1])[0].shape == (32, 32, 3)
    assert lay(["a red circle"], [[{"label": "red circle", "box": [0.1, 0.1, 0.6, 0.6]}]], [1])[0].shape == (32, 32, 3)
    assert inp("a red circle", img, mask, 1).size == (32, 32)
    assert sr(img.resize((16, 16)), 1).size == (64, 64)
    assert t2i.ran == lay.ran == inp.ran == sr.ran == {ran}   # (the tiny catalog's default: none)


def test_eval_cli_speedups_option_reaches_the_requests(tiny_catalog, tmp_path):
    args = ["inpaint-wide", "--catalog", str(tiny_catalog), "--model", "tiny-inpaint", "--n-scenes", "1",
            "--steps", "1"]
    main([*args, "--speedups", "deepcache", "--out", str(tmp_path / "dc")])
    res = json.loads((tmp_path / "dc" / "results.json").read_text())
    assert res["speedups"] == {"requested": "deepcache", "ran": [DEEPCACHE]} and res["n"] == 12
    assert f"speed-ups: {DEEPCACHE}" in (tmp_path / "dc" / "report.md").read_text()
    main([*args, "--out", str(tmp_path / "default")])        # unset: the model's own (here none)
    res = json.loads((tmp_path / "default" / "results.json").read_text())
    assert res["speedups"] == {"requested": None, "ran": ["none"]}
    assert "speed-ups" not in (tmp_path / "default" / "report.md").read_text()
    assert np.isfinite(res["object_restored"])
