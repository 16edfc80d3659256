"""The layout tab's box editor, driven with the mouse and keyboard in Debian's chromium.

Draws boxes with real pointer events, labels them (typed and picked), checks each box is
drawn in its label's colour (pixels of the canvas), edits, moves and deletes boxes the way
the page's help line says, and generates: the saved PNG's parameters hold exactly the boxes
left. Same server and browser set-up as tests/test_browser.py (whose fixtures these are).

    OMP_NUM_THREADS=1 python -m pytest -q tests/test_browser_layout.py
"""
from __future__ import annotations

import io

import numpy as np
import test_browser as tb  # skips this module too where chromium or playwright is missing
from PIL import Image
from test_browser import GENERATION_MS, UI_MS, open_tab, screenshot, toasts, wait_gallery

browser, page, studio = tb.browser, tb.page, tb.studio   # its fixtures: a studio on tiny models, chromium

HEX = {"red": "#dc2828", "yellow": "#e6c81e", "green": "#28aa3c", "cyan": "#1eb4c8", "blue": "#2846dc",
       "magenta": "#c832be", "none": "#888888"}
ALPHA = 0.5   # the annotator fills a box with its colour at this opacity over the (white) canvas


def canvas_box(page) -> dict:
    open_tab(page, "Layout → Image")
    canvas = page.locator("#layout-canvas canvas").first
    canvas.wait_for(state="visible")
    canvas.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    return canvas.bounding_box()


def drag(page, bb: dict, start: tuple[float, float], end: tuple[float, float], steps: int = 10) -> None:
    """Press at `start`, move in steps as a hand would, release at `end` (canvas pixels)."""
    (x0, y0), (x1, y1) = start, end
    page.mouse.move(bb["x"] + x0, bb["y"] + y0)
    page.mouse.down()
    for i in range(1, steps + 1):
        page.mouse.move(bb["x"] + x0 + (x1 - x0) * i / steps, bb["y"] + y0 + (y1 - y0) * i / steps)
    page.mouse.up()


def dialog(page):
    modal = page.locator("#model-box-edit")
    modal.wait_for(state="visible")
    return modal, modal.locator("input[aria-label=Label]")


def press_ok(page, modal) -> None:
    modal.get_by_role("button", name="OK").click()
    modal.wait_for(state="hidden")


def boxes_panel(page) -> str:
    return page.locator("#layout-boxes .cm-content").inner_text()


def wait_panel(page, predicate: str) -> None:
    """Wait until the boxes panel's text satisfies a JS predicate on `t` (the server has the boxes)."""
    page.wait_for_function(f"() => {{ const e = document.querySelector('#layout-boxes .cm-content'); "
                           f"const t = e ? e.innerText : ''; return {predicate}; }}", timeout=UI_MS)


def fill_colour(page, bb: dict, centre: tuple[float, float]) -> np.ndarray:
    """The median colour of a 20 px patch in the middle of a box, from a screenshot of the canvas."""
    page.mouse.move(bb["x"] + bb["width"] - 2, bb["y"] + bb["height"] - 2)  # no hover cursor over the box
    page.wait_for_timeout(300)
    rgb = np.asarray(Image.open(io.BytesIO(page.locator("#layout-canvas canvas").first.screenshot()))
                     .convert("RGB")).astype(float)
    sx, sy = rgb.shape[1] / bb["width"], rgb.shape[0] / bb["height"]
    cx, cy = round(centre[0] * sx), round(centre[1] * sy)
    return np.median(rgb[cy - 10:cy + 10, cx - 10:cx + 10].reshape(-1, 3), axis=0)


def assert_colour(page, bb, centre, name: str) -> None:
    want = np.array([int(HEX[name][i:i + 2], 16) for i in (1, 3, 5)], float) * ALPHA + 255 * (1 - ALPHA)
    got = fill_colour(page, bb, centre)
    assert np.abs(got - want).max() < 25, f"the box at {centre} is drawn {got.round()}, not {name} ({want})"


def newest_layout_png(out):
    pngs = sorted(out.glob("**/layout2img-*.png"), key=lambda p: p.stat().st_mtime)
    return pngs[-1] if pngs else None


def error_toast(page) -> str:
    page.locator("[data-testid=toast-body].error").first.wait_for(state="visible", timeout=GENERATION_MS)
    return " ".join(toasts(page))


# --------------------------------------------------------------------------------------------

def test_draw_label_edit_delete_generate(page, studio):
    """The whole editor by hand: two boxes (one label typed, one picked) in their labels' colours,
    one relabelled and moved, one deleted with the Delete key, then Generate: the PNG's parameters
    hold exactly the box left, with its new label and place."""
    bb = canvas_box(page)
    help_text = page.locator("#layout-help").inner_text()
    for words in ("Select", "double-click", "Delete", "circle", "magenta"):
        assert words in help_text, f"the help line does not say {words!r}: {help_text}"
    toolbar = page.locator("#layout-canvas .canvas-control")
    assert toolbar.locator("button[aria-label^=Rotate]:visible").count() == 0, "rotate buttons are shown"
    assert toolbar.locator("button[aria-label='Remove box']").is_visible()
    assert "Select (D)" in toolbar.evaluate(
        "e => [...e.querySelectorAll('button')].map(b => getComputedStyle(b, '::after').content).join(' ')")

    # box A: the label is typed; its dialog starts empty (not "red circle") and the box grey
    drag(page, bb, (60, 60), (210, 180))
    modal, label = dialog(page)
    assert label.input_value() == "", f"a new box comes pre-labelled {label.input_value()!r}"
    label.type("blue square")
    press_ok(page, modal)
    wait_panel(page, "t.includes('blue square')")
    page.wait_for_timeout(300)
    assert_colour(page, bb, (135, 120), "blue")

    # box B: the label is picked from the list
    drag(page, bb, (300, 280), (440, 430))
    modal, label = dialog(page)
    assert label.input_value() == ""
    label.click()
    modal.locator("li[aria-label='red circle']").click()
    press_ok(page, modal)
    wait_panel(page, "t.includes('red circle')")
    assert_colour(page, bb, (370, 355), "red")
    assert_colour(page, bb, (135, 120), "blue")
    assert "2 boxes" in page.locator("#layout-status").inner_text()

    # as the help says: the Select tool, click a box, press Delete
    page.locator("#layout-canvas button[aria-label='Drag boxes']").click()
    page.mouse.click(bb["x"] + 370, bb["y"] + 355)
    page.keyboard.press("Delete")
    wait_panel(page, "!t.includes('red circle') && t.includes('blue square')")
    assert fill_colour(page, bb, (370, 355)).min() > 245, "the deleted box is still drawn"

    # double-click the other to relabel it (typed again), then drag it 80 px right and 100 px down
    page.mouse.dblclick(bb["x"] + 135, bb["y"] + 120)
    modal, label = dialog(page)
    assert label.input_value() == "blue square"
    label.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("green triangle")
    press_ok(page, modal)
    wait_panel(page, "t.includes('green triangle')")
    page.wait_for_timeout(300)
    assert_colour(page, bb, (135, 120), "green")
    drag(page, bb, (135, 120), (215, 220))
    page.wait_for_timeout(300)
    assert_colour(page, bb, (215, 220), "green")
    screenshot(page, "layout2img-editor")

    # generate: the PNG holds exactly the box left
    before = newest_layout_png(studio[1])
    page.click("#layout-generate")
    wait_gallery(page, "layout-gallery")
    made = newest_layout_png(studio[1])
    assert made is not None and made != before
    from ldm_core.provenance import read_parameters
    boxes = read_parameters(made)["boxes"]
    assert [b["label"] for b in boxes] == ["green triangle"], boxes
    scale = 512 / bb["width"]   # canvas pixels on the page -> the 512 px layout
    want = np.array([140, 160, 290, 280]) * scale / 512
    assert np.abs(np.array(boxes[0]["box"]) - want).max() < 0.02, (boxes[0]["box"], want.round(3))


def test_unlabelled_box_is_grey_and_generate_says_what_to_do(page, studio):
    """OK on a new box without choosing a label leaves it unlabelled and grey (it used to become a
    "red circle"); the page says so, and Generate refuses it with how to give it a label."""
    bb = canvas_box(page)
    drag(page, bb, (100, 100), (260, 220))
    modal, label = dialog(page)
    assert label.input_value() == "", f"a new box comes pre-labelled {label.input_value()!r}"
    press_ok(page, modal)
    wait_panel(page, "t.includes('\"label\": \"\"')")
    assert_colour(page, bb, (180, 160), "none")
    assert "no label" in page.locator("#layout-status").inner_text()
    before = newest_layout_png(studio[1])
    page.click("#layout-generate")
    text = error_toast(page)
    assert "no label" in text and "double-click" in text, text
    assert "Traceback" not in text
    assert newest_layout_png(studio[1]) == before
    assert page.locator("#layout-gallery img").count() == 0


def test_a_label_the_model_does_not_know_is_refused_before_generating(page, studio):
    """A typed label outside the built-in model's words: named on the page at once, and Generate
    refuses it saying which words the model knows and how to change the label."""
    bb = canvas_box(page)
    drag(page, bb, (80, 300), (240, 440))
    modal, label = dialog(page)
    label.type("purple dog")
    press_ok(page, modal)
    wait_panel(page, "t.includes('purple dog')")
    assert_colour(page, bb, (160, 370), "none")
    page.wait_for_function("() => document.querySelector('#layout-status').innerText.includes('does not know')",
                           timeout=UI_MS)
    page.click("#layout-generate")
    text = error_toast(page)
    assert "purple dog" in text and "magenta" in text and "double-click" in text, text
    assert page.locator("#layout-gallery img").count() == 0



def test_a_larger_canvas_draws_the_layout_at_its_size(page, studio):
    """The layout at 128x128 (twice the built-in model's training size, run convolutionally, §4.3.2):
    size typed in, a box drawn and labelled with the mouse, the result saved at that size."""
    open_tab(page, "Layout → Image")
    for control in ("width", "height"):
        box = page.locator(f"#layout2img-{control} input[type=number]")
        box.click(click_count=3)
        page.keyboard.type("128")
        page.keyboard.press("Enter")
    bb = canvas_box(page)          # the size controls sit below the results: the page scrolled to them
    drag(page, bb, (120, 120), (300, 300))
    modal, label = dialog(page)
    label.fill("red circle")
    press_ok(page, modal)
    wait_panel(page, "t.includes('red circle')")
    before = newest_layout_png(studio[1])
    page.click("#layout-generate")
    wait_gallery(page, "layout-gallery")
    made = newest_layout_png(studio[1])
    assert made != before and Image.open(made).size == (128, 128)
    from ldm_core.provenance import read_parameters
    assert read_parameters(made)["size"] == "128x128"
