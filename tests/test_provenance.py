from PIL import Image

from ldm_core.provenance import a1111_text, is_ai_generated, read_parameters, save_png


def test_png_round_trip(tmp_path):
    params = {"task": "text2img", "prompt": "a red circle", "negative_prompt": "blue", "steps": 25, "seed": 7,
              "sampler": "DDIM", "guidance_scale": 4.0, "size": "64x64", "model": "m"}
    p = save_png(Image.new("RGB", (8, 8)), params, tmp_path)
    assert p.suffix == ".png" and read_parameters(p) == params
    assert is_ai_generated(p)
    txt = Image.open(p).text["parameters"]
    assert txt.startswith("a red circle\nNegative prompt: blue\n") and "Seed: 7" in txt
    assert a1111_text(params) == txt


def test_plain_png_has_no_parameters(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "x.png")
    assert read_parameters(tmp_path / "x.png") is None and not is_ai_generated(tmp_path / "x.png")
