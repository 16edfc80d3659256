"""`python -m ldm_core <task>` writes PNGs that carry their parameters."""

import numpy as np
from PIL import Image

from ldm_core.__main__ import main
from ldm_core.provenance import read_parameters


def test_every_task(tiny_catalog, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["--models", str(tiny_catalog), "--device", "cpu", "--outdir", str(out)]
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "img.png")
    m = Image.new("L", (32, 32), 0)
    m.paste(255, (4, 4, 12, 12))
    m.save(tmp_path / "mask.png")
    assert main([*base, "text2img", "a red circle", "--num-images", "2", "--seed", "4"]) == 0
    assert main([*base, "layout2img", "--boxes", '[{"label": "red circle", "box": [0.1, 0.1, 0.5, 0.5]}]']) == 0
    assert main([*base, "superres", str(tmp_path / "img.png")]) == 0
    assert main([*base, "inpaint", str(tmp_path / "img.png"), str(tmp_path / "mask.png"), "--prompt", "a"]) == 0
    assert main([*base, "img2img", str(tmp_path / "img.png"), "--prompt", "a", "--strength", "0.5", "--seed", "9"]) == 0
    assert main([*base, "unconditional", "--eta", "0.5", "--seed", "3"]) == 0
    assert main([*base, "class2img", "green triangle; 0", "--num-images", "2", "--guidance-scale", "2"]) == 0
    Image.fromarray(np.full((32, 48), 6, np.uint8), mode="L").save(tmp_path / "labels.png")   # all "yellow square"
    assert main([*base, "semantic2img", str(tmp_path / "labels.png"), "--width", "96", "--height", "64"]) == 0
    paths = [p for p in capsys.readouterr().out.split() if p.endswith(".png")]
    assert len(paths) == 10
    params = [read_parameters(p) for p in paths]
    assert [p["task"] for p in params] == ["text2img", "text2img", "layout2img", "superres", "inpaint", "img2img",
                                           "unconditional", "class2img", "class2img", "semantic2img"]
    assert params[9]["size"] == "96x64" and params[9]["label_map_classes"] == {"yellow square": 1.0}
    assert params[6]["eta"] == 0.5 and params[6]["seed"] == 3
    assert [p["class_name"] for p in params[7:9]] == ["green triangle", "red circle"]
    params = params[:6]
    assert params[-1]["strength"] == 0.5 and params[-1]["seed"] == 9 and params[-1]["size"] == "32x32"
    assert [p["seed"] for p in params[:2]] == [4, 5]


def test_bad_input_exits_2_with_a_message(tiny_catalog, tmp_path, capsys):
    assert main(["--models", str(tiny_catalog), "text2img", "a", "--steps", "0"]) == 2
    assert "steps must be between" in capsys.readouterr().err
    assert main(["--models", str(tiny_catalog), "img2img", str(tmp_path / "none.png"), "--strength", "2"]) == 2
    assert "image file could not be read" in capsys.readouterr().err


def test_watermark_command(tiny_catalog, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--models", str(tiny_catalog), "--device", "cpu", "--outdir", str(out), "text2img", "a", "--seed",
                 "2"]) == 0
    made = [p for p in capsys.readouterr().out.split() if p.endswith(".png")][0]
    Image.new("RGB", (32, 32), (1, 2, 3)).save(tmp_path / "plain.png")
    assert main(["watermark", made]) == 0
    line = capsys.readouterr().out
    assert "watermark LDS1 (32/32 bits), AI-generated label, parameters: {" in line
    assert main(["watermark", made, str(tmp_path / "plain.png")]) == 1
    assert "plain.png: no watermark" in capsys.readouterr().out
