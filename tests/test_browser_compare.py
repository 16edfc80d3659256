"""Before / after (issue 29, feature 8): a gr.ImageSlider under super-resolution's and image -> image's
results, its handle dragged with the mouse.

    OMP_NUM_THREADS=1 python -m pytest tests/test_browser_compare.py -x -q
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image
import test_browser as tb  # skips this module too where chromium or playwright is missing
from test_browser import UI_MS, generate_text2img, open_tab, screenshot, wait_gallery

browser, page, studio = tb.browser, tb.page, tb.studio   # its fixtures


def drag_handle(page, elem_id: str) -> tuple[np.ndarray, np.ndarray]:
    """The slider's pixels with the handle at the left edge and then at the right one."""
    box = page.locator(f"#{elem_id} .slider-wrap").first.bounding_box()
    shots = []
    for x in (box["x"] + 4, box["x"] + box["width"] - 4):
        handle = page.locator(f"#{elem_id} .icon-wrap").first.bounding_box()    # the orange handle
        y = handle["y"] + handle["height"] / 2
        page.mouse.move(handle["x"] + handle["width"] / 2, y)
        page.mouse.down()
        page.mouse.move(x, y, steps=8)
        page.mouse.up()
        page.wait_for_timeout(300)
        shots.append(np.asarray(Image.open(io.BytesIO(page.locator(f"#{elem_id}").screenshot())).convert("L"),
                                dtype=float))
    return shots[0], shots[1]


def test_superres_result_compares_with_its_input(page, tmp_path):
    from ldm_core.data.shapes import sample_scene
    src = tmp_path / "low.png"
    Image.fromarray(sample_scene(41_000_007).image).resize((16, 16), Image.BICUBIC).save(src)
    open_tab(page, "Super-resolution")
    page.locator("#sr-input input[type=file]").set_input_files(str(src))
    page.locator("#sr-input img").first.wait_for(state="visible")
    page.click("#sr-generate")
    wait_gallery(page, "sr-gallery")
    compare = page.locator("#sr-compare")
    compare.wait_for(state="visible", timeout=UI_MS)
    page.wait_for_function("() => document.querySelectorAll('#sr-compare img').length >= 2", timeout=UI_MS)
    compare.scroll_into_view_if_needed()
    left, right = drag_handle(page, "sr-compare")
    assert np.abs(left - right).mean() > 1.0, "dragging the handle changed nothing"
    screenshot(page, "compare-superres")


def test_img2img_result_compares_with_its_input(page, studio):
    generate_text2img(page, "a red circle")
    page.click("#t2i-send-img2img")
    page.locator("#i2i-input img").first.wait_for(state="visible", timeout=UI_MS)
    page.fill("#i2i-prompt textarea", "a blue square")
    page.click("#i2i-generate")
    wait_gallery(page, "i2i-gallery")
    page.locator("#i2i-compare").wait_for(state="visible", timeout=UI_MS)
    page.wait_for_function("() => document.querySelectorAll('#i2i-compare img').length >= 2", timeout=UI_MS)
