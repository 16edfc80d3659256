"""The layout tab with the paper's layout model (layout2img-openimages256; here its tiny stand-in
`tiny-paper-layout`), driven with the mouse and keyboard in Debian's chromium.

Choosing the model turns the box editor's label list into the model's 340 OpenImages classes (searchable
by typing), its help line and guidance with it; a box labelled with a word the model does not know is
named on the page with close names and refused on Generate; a picked class generates and the PNG holds
it; choosing another model brings the built-in words back. Same server and browser set-up as
tests/test_browser.py (whose fixtures these are).

    OMP_NUM_THREADS=1 python -m pytest -q tests/test_browser_layout_paper.py
"""
from __future__ import annotations

import numpy as np
import test_browser as tb  # skips this module too where chromium or playwright is missing
from PIL import Image
from test_browser import UI_MS, screenshot, wait_gallery
from test_browser_layout import HEX, ALPHA, canvas_box, dialog, drag, error_toast, fill_colour, newest_layout_png, \
    press_ok, wait_panel

from ldm_core.provenance import read_parameters

browser, page, studio = tb.browser, tb.page, tb.studio   # its fixtures: a studio on tiny models, chromium
MODEL = "tiny-paper-layout"


def choose_model(page, name: str) -> None:
    """Pick a model in the dropdown the way a user does: click, type to filter, click the choice."""
    box = page.locator("#layout2img-model")
    box.locator("input").click()
    page.keyboard.press("Control+A")
    page.keyboard.type(name)
    box.locator(f"[data-testid=dropdown-option][aria-label^='{name} ']").click()


def listed(modal) -> list[str]:
    """The labels the open dialog's list shows (the blank first choice left out)."""
    return [t for t in modal.locator("li[aria-label]:visible").evaluate_all("es => es.map(e => e.ariaLabel)") if t]


def guidance(page):
    """The layout tab's guidance number box (the other tabs have one of the same label, hidden)."""
    boxes = page.get_by_label("Guidance scale")
    return next(boxes.nth(i) for i in range(boxes.count()) if boxes.nth(i).is_visible())


def wait_grey(page, bb: dict, centre: tuple[float, float]) -> None:
    """Wait until the box at `centre` is drawn grey (no colour of the model's): the server recolours it."""
    want = np.array([int(HEX["none"][i:i + 2], 16) for i in (1, 3, 5)], float) * ALPHA + 255 * (1 - ALPHA)
    for _ in range(UI_MS // 500):
        got = fill_colour(page, bb, centre)
        if np.abs(got - want).max() < 25:
            return
    raise AssertionError(f"the box at {centre} is drawn {got.round()}, not grey ({want})")


def wait_status(page, words: str) -> str:
    page.wait_for_function("(w) => document.querySelector('#layout-status').innerText.includes(w)", arg=words,
                           timeout=UI_MS)
    return page.locator("#layout-status").inner_text()


def test_the_papers_model_offers_its_classes_refuses_other_words_and_generates(page, studio):
    bb = canvas_box(page)
    # the built-in model first: its words in the list, a box labelled with one
    drag(page, bb, (60, 60), (240, 220))
    modal, label = dialog(page)
    label.click()
    assert "red circle" in listed(modal) and "Snake" not in listed(modal)
    modal.locator("li[aria-label='red circle']").click()
    press_ok(page, modal)
    wait_panel(page, "t.includes('red circle')")

    # the paper's model: its classes, its help line, no guidance; the built-in word is now unknown
    choose_model(page, MODEL)
    assert "does not know the label 'red circle'" in wait_status(page, "does not know")
    page.wait_for_function("() => document.querySelector('#layout-help').innerText.includes('340 classes')",
                           timeout=UI_MS)
    assert guidance(page).is_disabled()
    assert page.locator("#layout-prompt textarea").is_disabled()           # it reads no caption

    # relabel: double-click with the Select tool, type to search the list, pick the class
    page.locator("#layout-canvas button[aria-label='Drag boxes']").click()
    bb = canvas_box(page)          # the model control sits below the results: the page scrolled to it
    page.mouse.dblclick(bb["x"] + 150, bb["y"] + 140)
    modal, label = dialog(page)
    label.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("sna")
    page.wait_for_timeout(300)
    shown = listed(modal)
    assert "Snake" in shown and "Snail" in shown and "red circle" not in shown and len(shown) < 10, shown
    screenshot(page, "layout2img-openimages-search")
    modal.locator("li[aria-label='Snake']").click()
    press_ok(page, modal)
    wait_panel(page, "t.includes('Snake')")
    assert "1 box, ready" in wait_status(page, "ready")
    page.wait_for_timeout(300)
    colour = fill_colour(page, bb, (150, 140))
    assert np.ptp(colour) > 40, f"a picked class is drawn grey: {colour}"   # a class's palette colour

    # a word the model does not know: named with a close class, and Generate refuses it
    page.locator("#layout-canvas button[aria-label='Create box']").click()
    drag(page, bb, (300, 300), (450, 440))
    modal, label = dialog(page)
    label.type("doggy")
    press_ok(page, modal)
    wait_panel(page, "t.includes('doggy')")
    assert "did you mean 'Dog'" in wait_status(page, "doggy")
    before = newest_layout_png(studio[1])
    page.click("#layout-generate")
    text = error_toast(page)
    assert "doggy" in text and "'Dog'" in text and "double-click" in text, text
    assert newest_layout_png(studio[1]) == before

    # delete it (Select, click, Delete) and generate: the PNG holds the class, at the model's size
    page.locator("#layout-canvas button[aria-label='Drag boxes']").click()
    page.mouse.click(bb["x"] + 375, bb["y"] + 370)
    page.keyboard.press("Delete")
    wait_panel(page, "!t.includes('doggy')")
    page.locator("[data-testid=toast-close]").first.click()              # close the error toast
    page.locator("[data-testid=toast-body].error").first.wait_for(state="detached", timeout=UI_MS)
    page.click("#layout-generate")
    wait_gallery(page, "layout-gallery")
    made = newest_layout_png(studio[1])
    params = read_parameters(made)
    assert params["model"] == MODEL and [b["label"] for b in params["boxes"]] == ["Snake"], params
    assert params["guidance_scale"] == 1.0 and Image.open(made).size == (32, 32)
    screenshot(page, "layout2img-openimages")

    # back to the built-in model: its words again, its help line, guidance
    choose_model(page, "tiny-layout2img")
    page.wait_for_function("() => document.querySelector('#layout-help').innerText.includes('magenta')",
                           timeout=UI_MS)
    assert "'Snake'" in wait_status(page, "does not know")
    bb = canvas_box(page)                  # the canvas moved up with the shorter help line
    page.wait_for_function("() => !document.querySelector('#layout-help').innerText.includes('340')")
    wait_grey(page, bb, (150, 140))                  # the class is no word of this model's: grey
    page.locator("#layout-canvas button[aria-label='Create box']").click()
    drag(page, bb, (300, 300), (450, 440))
    modal, label = dialog(page)
    label.click()
    assert "blue square" in listed(modal) and "Snake" not in listed(modal)
    page.wait_for_timeout(300)
    assert not guidance(page).is_disabled() and not page.locator("#layout-prompt textarea").is_disabled()
