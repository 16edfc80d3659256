"""Issue #29: a wide mask blur left a ghost of the removed object; outpainting's new area could not be
seen before running; Reuse left the editor empty; an X/Y grid was taken as a picture to inpaint."""
import numpy as np
import pytest
from PIL import Image, ImageDraw

from ldm_core.pipelines.inpaint import blend_outside_mask, seam
from ldm_core.provenance import save_png
from ldm_core.requests import RequestError
from ldm_core.tasks.inpaint import InpaintRequest
from tabs.inpaint import NEW_AREA, outpaint_preview, reuse_editor

BLUE = (40, 60, 220)


def square_scene(side=64):
    """A white picture with a blue square at (38..56, 22..40), and a mask over it with a 4 px margin."""
    image = Image.new("RGB", (side, side), "white")
    ImageDraw.Draw(image).rectangle([38, 22, 56, 40], fill=BLUE)
    mask = Image.new("L", (side, side), 0)
    ImageDraw.Draw(mask).rectangle([34, 18, 60, 44], fill=255)
    return image, mask


def blueness(a: np.ndarray) -> np.ndarray:
    return a[..., 2].astype(int) - a[..., 0].astype(int)


@pytest.mark.parametrize("blur", [0, 2, 4, 12, 32])
def test_no_ghost_of_the_masked_object_at_any_blur(blur):
    """The model painted plain white over the square: nothing of the square may show through the seam
    (it faded the original in: at blur 12 the whole square came back at half strength)."""
    image, mask = square_scene()
    out = np.asarray(blend_outside_mask(image, Image.new("RGB", image.size, "white"), mask, blur))
    inside, was_square = np.asarray(mask) > 0, np.all(np.asarray(image) == BLUE, -1)
    assert blueness(out)[was_square].max() <= 0, f"a ghost of the square: blue {blueness(out)[was_square].max()}"
    assert np.array_equal(out[~inside], np.asarray(image)[~inside])          # outside: exactly as given


def test_the_seam_fades_from_the_colours_just_outside_the_mask():
    image, mask = Image.new("RGB", (64, 64), (200, 100, 0)), Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle([10, 10, 53, 53], fill=255)
    out = np.asarray(blend_outside_mask(image, Image.new("RGB", (64, 64), (0, 100, 200)), mask, 3), dtype=int)
    assert tuple(out[32, 10]) == (100, 100, 100)             # the border pixel: half and half
    assert tuple(out[32, 32]) == (0, 100, 200)               # the middle: all new
    assert out[32, 10, 0] > out[32, 13, 0] > out[32, 16, 0]  # a ramp in between


def test_a_blur_too_wide_for_the_mask_is_narrowed_and_said():
    _, mask = square_scene()
    alpha, _, note = seam(mask, 12)
    assert note and "mask blur 12 px" in note and "middle is all new" in note
    assert alpha[31, 47] == 1.0 and alpha[31, 34] == 0.5 and alpha[0, 0] == 0
    assert seam(mask, 2)[2] is None and seam(mask, 0)[2] is None


def test_the_narrowed_seam_is_a_warning_of_the_result(stack):
    image, mask = square_scene(32)
    mask = Image.new("L", (32, 32), 0)
    ImageDraw.Draw(mask).rectangle([8, 8, 19, 19], fill=255)
    wide = stack.run(InpaintRequest(image=image, mask=mask, seed=1, mask_blur=12, model="tiny-inpaint"))
    assert any("mask blur 12 px is wider" in w for w in wide.info["warnings"])
    narrow = stack.run(InpaintRequest(image=image, mask=mask, seed=1, mask_blur=1, model="tiny-inpaint"))
    assert not any("mask blur" in w for w in narrow.info.get("warnings", []))


def test_the_outpainting_preview_stripes_exactly_the_area_to_be_added():
    picture = Image.new("RGB", (64, 64), "white")
    update = outpaint_preview({"background": picture}, 0, 0, 32, 0)
    shown = np.asarray(update["value"], dtype=int)
    k = 256 // 96 + 1                                             # drawn 3x: at least 256 px a side
    assert update["visible"] and shown.shape == (64 * k, 96 * k, 3) and "64x64 -> 96x64" in update["label"]
    marked = np.abs(shown - 255).max(-1) > 50                   # tinted towards NEW_AREA
    assert 0.3 < marked[:, 64 * k + 2:].mean() < 0.7             # the new strip: striped
    assert not marked[2:-2, 2:64 * k - 2].any()                   # the picture: untouched
    assert np.all(shown[10, 64 * k - 1:64 * k + 1] == NEW_AREA)   # a line along the picture's edge
    assert outpaint_preview({"background": picture}, 0, 0, 0, 0)["visible"] is False
    assert outpaint_preview(None, 0, 0, 32, 0)["visible"] is False


def grid_png(tmp_path):
    """A picture whose PNG info says it is an X/Y plot (ldm_core/compositions/xyplot.py keeps its axes so)."""
    params = {"task": "text2img", "prompt": "a red circle", "seed": 1, "size": "128x64",
              "xyplot": {"x_axis": "seed", "x_values": [1, 2], "y_axis": None}}
    return save_png(Image.new("RGB", (128, 64), "white"), params, tmp_path)


def test_an_xy_grid_is_not_taken_as_a_picture_to_inpaint(stack, tmp_path):
    with pytest.raises(RequestError, match="X/Y plot grid"):
        stack.run(InpaintRequest(image=str(grid_png(tmp_path)), extend_right=8, model="tiny-inpaint"))
    single = save_png(Image.new("RGB", (32, 32)), {"task": "text2img", "seed": 1}, tmp_path)
    assert stack.run(InpaintRequest(image=str(single), extend_right=8, steps=2, model="tiny-inpaint")).images


def test_reuse_puts_the_result_in_the_editor(tmp_path):
    made = save_png(Image.new("RGB", (96, 64), "red"), {"task": "inpaint", "seed": 1}, tmp_path)
    value = reuse_editor(str(made), {"task": "inpaint", "extend_right": 0})
    assert value["background"].size == (96, 64) and value["layers"] == []


def test_reuse_of_an_outpainting_result_cuts_the_extended_picture_back_out(tmp_path):
    a = np.zeros((64, 96, 3), np.uint8)
    a[:, :64] = (10, 200, 10)                                   # the picture it extended; the new strip black
    made = save_png(Image.fromarray(a), {"task": "inpaint", "extend_right": 32, "keep_unmasked": True}, tmp_path,
                    watermark=False)
    value = reuse_editor(str(made), {"task": "inpaint", "extend_right": 32, "keep_unmasked": True})
    assert value["background"].size == (64, 64)
    assert np.all(np.asarray(value["background"]) == (10, 200, 10))
