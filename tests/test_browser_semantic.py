"""The Semantic → Image tab in Debian's chromium: a label map painted with the mouse, a class at a
time in its colour, on a new 512×256 canvas, and generated at that size (convolutionally, beyond
the model's training size). Same server and browser set-up as tests/test_browser.py (whose
fixtures these are).

    OMP_NUM_THREADS=1 python -m pytest -q tests/test_browser_semantic.py
"""
from __future__ import annotations

import io

import numpy as np
import test_browser as tb  # skips this module too where chromium or playwright is missing
from PIL import Image
from test_browser import GENERATION_MS, open_tab, screenshot, wait_gallery

from ldm_core.data.label_maps import PALETTE_RGB, SEMANTIC_CLASSES

browser, page, studio = tb.browser, tb.page, tb.studio   # its fixtures: a studio on tiny models, chromium


def pick_class(page, typed: str, name: str) -> None:
    """Search the class list, click the class: the editor's brush takes its colour (its palette
    button shows it) and the swatches close again."""
    box = page.locator("#s2i-class input").first
    box.click()
    box.fill("")
    page.keyboard.type(typed)
    page.locator(f"#s2i-class [data-testid=dropdown-option][aria-label='{name}']").click()
    index = str(SEMANTIC_CLASSES.index(name))
    rgb = "rgb(%d, %d, %d)" % tuple(PALETTE_RGB[int(index)])
    page.wait_for_function("""([i, rgb]) => { const ed = document.querySelector('#s2i-editor');
        const b = ed.querySelector("button[aria-label='Color']");
        return ed.dataset.picked === i && b && getComputedStyle(b).color === rgb; }""", arg=[index, rgb])
    page.mouse.move(10, 10)              # the hand leaves the list for the canvas, as a person's does
    page.wait_for_timeout(600)


def stroke(page, bb: dict, start: tuple[float, float], end: tuple[float, float], moves: int = 6) -> None:
    """A brush stroke from `start` to `end` (fractions of the canvas), a few moves as a hand would."""
    x0, y0 = bb["x"] + bb["width"] * start[0], bb["y"] + bb["height"] * start[1]
    x1, y1 = bb["x"] + bb["width"] * end[0], bb["y"] + bb["height"] * end[1]
    page.mouse.move(x0, y0, steps=3)
    page.mouse.down()
    for i in range(1, moves + 1):      # several events per move, as a hand's mouse sends them
        page.mouse.move(x0 + (x1 - x0) * i / moves, y0 + (y1 - y0) * i / moves, steps=4)
    page.mouse.up()


def steady_box(canvas, tries: int = 20) -> dict:
    """The canvas's box once it stops moving (the editor zooms a new canvas to fit in steps)."""
    bb = canvas.bounding_box()
    for _ in range(tries):
        canvas.page.wait_for_timeout(250)
        now = canvas.bounding_box()
        if now == bb:
            break
        bb = now
    return bb


def near(shot: np.ndarray, rgb, tol: float = 30) -> int:
    return int((np.abs(shot.astype(np.int16) - np.asarray(rgb, np.int16)).max(-1) < tol).sum())


def idle(page) -> None:
    """Wait until the editor is not busy with the server (a new canvas, its strokes' upload)."""
    page.wait_for_timeout(300)
    page.wait_for_function("() => !document.querySelector('#s2i-editor').innerText.includes('processing')",
                           timeout=GENERATION_MS)


def shown(canvas, *colours, tries: int = 20) -> tuple[int, ...]:
    """Pixels of each colour on the canvas, once all show (a slow software WebGL may take a moment)."""
    for _ in range(tries):
        shot = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB"))
        seen = tuple(near(shot, c) for c in colours)
        if min(seen) > 200:
            break
        canvas.page.wait_for_timeout(500)
    return seen


def set_number(page, elem_id: str, value: int) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def test_paint_a_label_map_and_generate_wide(page, studio):
    open_tab(page, "Semantic → Image")
    set_number(page, "semantic2img-width", 512)
    set_number(page, "semantic2img-height", 256)
    page.wait_for_function("() => document.querySelector('#semantic2img-height input[type=number]').value === '256'")
    zoom = page.locator("#s2i-editor .zoom-number")
    before = zoom.inner_text().strip()
    page.click("#s2i-new-canvas")     # the canvas lands when the editor zooms to fit its new size
    page.wait_for_function("([e, z]) => e.innerText.trim() !== z", arg=[zoom.element_handle(), before],
                           timeout=GENERATION_MS)
    idle(page)
    canvas = page.locator("#s2i-editor canvas").first
    canvas.scroll_into_view_if_needed()
    red, blue = (PALETTE_RGB[SEMANTIC_CLASSES.index(n)] for n in ("red circle", "blue square"))
    pick_class(page, "red ci", "red circle")
    stroke(page, steady_box(canvas), (0.15, 0.4), (0.35, 0.6))   # where the canvas is now, not where it was
    assert min(shown(canvas, red)) > 200, "the red circle stroke is not drawn in its colour"
    pick_class(page, "blue sq", "blue square")
    stroke(page, steady_box(canvas), (0.6, 0.3), (0.8, 0.5))
    seen = shown(canvas, red, blue)
    assert min(seen) > 200, f"the strokes are not both drawn in their classes' colours: {seen} pixels"
    page.click("#s2i-generate")
    wait_gallery(page, "s2i-gallery")
    made = sorted(studio[1].glob("**/semantic2img-*.png"), key=lambda p: p.stat().st_mtime)[-1]
    from ldm_core.provenance import read_parameters
    params = read_parameters(made)
    assert Image.open(made).size == (512, 256) and params["size"] == "512x256", params
    assert params["label_map_size"] == [512, 256], params
    painted = params["label_map_classes"]            # what the server read from the canvas: the two strokes
    assert {"red circle", "blue square"} <= set(painted) and painted["background"] > 0.8, painted
    screenshot(page, "semantic2img")


def test_a_label_png_upload_is_used(page, studio, tmp_path):
    """A greyscale PNG of class ids, uploaded instead of painting."""
    ids = np.zeros((64, 64), np.uint8)
    ids[10:30, 10:30] = SEMANTIC_CLASSES.index("green square")
    path = tmp_path / "labels.png"
    Image.fromarray(ids, mode="L").save(path)
    open_tab(page, "Semantic → Image")
    page.locator("#s2i-upload input[type=file]").set_input_files(str(path))
    page.wait_for_timeout(500)
    page.click("#s2i-generate")
    wait_gallery(page, "s2i-gallery")
    made = sorted(studio[1].glob("**/semantic2img-*.png"), key=lambda p: p.stat().st_mtime)[-1]
    from ldm_core.provenance import read_parameters
    params = read_parameters(made)
    assert params["label_map_size"] == [64, 64]
    assert params["label_map_classes"] == {"background": 0.9023, "green square": 0.0977}, params
