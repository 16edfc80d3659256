"""Outpainting and soft seams: the inpainting task extends its canvas and blurs its mask's edge."""
import numpy as np
import pytest
from PIL import Image

from ldm_core.__main__ import main
from ldm_core.eval.seam import border_pairs, seam_step
from ldm_core.provenance import read_parameters
from ldm_core.tasks.inpaint import InpaintRequest
from ldm_core.requests import RequestError


def picture(w=32, h=32):
    a = np.full((h, w, 3), 240, np.uint8)
    a[8:20, 6:18] = (30, 60, 200)
    return Image.fromarray(a)


def test_outpainting_grows_the_canvas_and_keeps_the_original_exactly(stack):
    img = picture()
    r = stack.run(InpaintRequest(image=img, prompt="a red circle", extend_right=16, extend_top=8, seed=1,
                                 model="tiny-inpaint"))
    out = np.asarray(r.images[0])
    assert out.shape == (40, 48, 3) and r.info["size"] == "48x40"
    assert np.array_equal(out[8:, :32], np.asarray(img))                 # the original, untouched
    assert (r.info["extend_right"], r.info["extend_top"], r.info["extend_left"]) == (16, 8, 0)


def test_a_painted_mask_and_an_extension_together(stack):
    img, m = picture(), Image.new("L", (32, 32), 0)
    m.paste(255, (0, 0, 8, 8))
    r = stack.run(InpaintRequest(image=img, mask=m, extend_left=8, seed=2, model="tiny-inpaint"))
    out = np.asarray(r.images[0])
    assert out.shape == (32, 40, 3)
    assert np.array_equal(out[8:, 16:], np.asarray(img)[8:, 8:])           # neither the new area nor the mask


@pytest.mark.parametrize("bad, match", [({}, "no mask given"), ({"extend_right": 2000}, "extend_right"),
                                        ({"extend_right": 1000, "extend_bottom": 1000}, "extended canvas"),
                                        ({"extend_right": 8, "mask_blur": 99}, "mask_blur"),
                                        ({"extend_right": -8}, "extend_right")])
def test_bad_extensions_say_what_is_wrong(stack, bad, match):
    with pytest.raises(RequestError, match=match):
        stack.run(InpaintRequest(image=picture(), model="tiny-inpaint", **bad))


def test_mask_blur_changes_only_pixels_inside_the_mask(stack):
    img, m = picture(), Image.new("L", (32, 32), 0)
    m.paste(255, (4, 4, 24, 24))
    hard, soft = (np.asarray(stack.run(InpaintRequest(image=img, mask=m, seed=3, mask_blur=b,
                                                      model="tiny-inpaint")).images[0], dtype=int) for b in (0, 4))
    inside = np.asarray(m) > 0
    assert np.array_equal(hard[~inside], soft[~inside]) and np.array_equal(hard[~inside], np.asarray(img)[~inside])
    assert np.abs(hard[inside] - soft[inside]).max() > 0


def test_seam_step_measures_the_jump_across_the_border():
    mask = np.zeros((8, 8), bool)
    mask[:, 4:] = True
    i, o = border_pairs(mask)
    assert len(i) == 8 and mask.flat[i].all() and not mask.flat[o].any()
    img = np.zeros((8, 8, 3), np.uint8)
    img[:, 4:] = 30
    assert seam_step(img, mask) == 30 and seam_step(np.zeros_like(img), mask) == 0


def test_outpainting_from_the_command_line(tiny_catalog, tmp_path, capsys):
    picture().save(tmp_path / "img.png")
    assert main(["--models", str(tiny_catalog), "--device", "cpu", "--outdir", str(tmp_path / "out"), "inpaint",
                 str(tmp_path / "img.png"), "--extend-bottom", "16", "--mask-blur", "3"]) == 0
    path = next(p for p in capsys.readouterr().out.split() if p.endswith(".png"))
    params = read_parameters(path)
    assert params["extend_bottom"] == 16 and params["mask_blur"] == 3 and Image.open(path).size == (32, 48)
