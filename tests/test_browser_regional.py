"""Regional prompts in the Text -> Image tab, driven with the mouse and keyboard in Debian's chromium:
open the accordion, draw a box on its canvas, type the box's prompt, generate; the parameters used and
the saved PNG hold the region, and History's Reuse brings the box back to the editor. Same server and
browser set-up as tests/test_browser.py (whose fixtures these are).

    OMP_NUM_THREADS=1 python -m pytest -q tests/test_browser_regional.py
"""
from __future__ import annotations

import json

import numpy as np
import test_browser as tb  # skips this module too where chromium or playwright is missing
from test_browser import GENERATION_MS, UI_MS, open_tab, screenshot, toasts, wait_gallery

from ldm_core.provenance import read_parameters

browser, page, studio = tb.browser, tb.page, tb.studio   # its fixtures: a studio on tiny models, chromium


def open_regions(page) -> dict:
    """Text -> Image, the Regional prompts accordion opened with a click; the canvas's box on the page."""
    open_tab(page, "Text → Image")
    page.locator("#t2i-regions").get_by_text("Regional prompts").first.click()
    canvas = page.locator("#t2i-regions-canvas canvas").first
    canvas.wait_for(state="visible")
    canvas.scroll_into_view_if_needed()
    page.wait_for_timeout(300)
    return canvas.bounding_box()


def drag(page, bb: dict, start: tuple[float, float], end: tuple[float, float], steps: int = 10) -> None:
    """Press at `start`, move in steps as a hand would, release at `end` (fractions of the canvas)."""
    (x0, y0), (x1, y1) = [(bb["x"] + x * bb["width"], bb["y"] + y * bb["height"]) for x, y in (start, end)]
    page.mouse.move(x0, y0)
    page.mouse.down()
    for i in range(1, steps + 1):
        page.mouse.move(x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps)
    page.mouse.up()


def type_prompt(page, text: str) -> None:
    """Type the new box's prompt in its dialog and press OK."""
    modal = page.locator("#model-box-edit")
    modal.wait_for(state="visible")
    field = modal.locator("input[aria-label=Label]")
    assert field.input_value() == "", f"a new box comes with the prompt {field.input_value()!r}"
    field.click()
    page.keyboard.type(text)
    modal.get_by_role("button", name="OK").click()
    modal.wait_for(state="hidden")


def regions_shown(page) -> list:
    return json.loads(page.locator("#t2i-regions-json .cm-content").inner_text() or "[]")


def wait_regions(page, predicate: str) -> None:
    """Wait until the regions panel's text satisfies a JS predicate on `t` (the server has the boxes)."""
    page.wait_for_function(f"() => {{ const e = document.querySelector('#t2i-regions-json .cm-content'); "
                           f"const t = e ? e.innerText : ''; return {predicate}; }}", timeout=UI_MS)


def newest_png(out):
    pngs = sorted(out.glob("**/text2img-*.png"), key=lambda p: p.stat().st_mtime)
    return pngs[-1] if pngs else None


def test_draw_a_box_type_its_prompt_and_generate(page, studio):
    open_tab(page, "Text → Image")
    page.fill("#t2i-prompt textarea", "a red circle")             # first: typing there scrolls the page
    bb = open_regions(page)
    help_text = page.locator("#t2i-regions-help").inner_text()
    assert "Draw" in help_text and "double-click" in help_text, help_text
    drag(page, bb, (0.55, 0.1), (0.95, 0.9))                     # the right half, most of its height
    type_prompt(page, "a blue square")
    wait_regions(page, "t.includes('a blue square')")
    [region] = regions_shown(page)
    assert region["prompt"] == "a blue square"
    assert np.abs(np.array(region["box"]) - [0.55, 0.1, 0.95, 0.9]).max() < 0.03, region["box"]

    before = newest_png(studio[1])
    page.click("#t2i-generate")
    wait_gallery(page, "t2i-gallery")
    page.wait_for_function("() => document.querySelector('#t2i-info').innerText.includes('regions')",
                           timeout=GENERATION_MS)
    used = page.locator("#t2i-info").inner_text()
    assert '"regions"' in used and "a blue square" in used, used
    made = newest_png(studio[1])
    assert made is not None and made != before
    assert read_parameters(made)["regions"] == [region]
    screenshot(page, "text2img-regional-prompts")

    # History's Reuse brings the box back to the editor, after it was deleted there
    page.locator("#t2i-regions-canvas button[aria-label='Drag boxes']").click()
    canvas = page.locator("#t2i-regions-canvas canvas").first
    canvas.scroll_into_view_if_needed()
    bb = canvas.bounding_box()                                       # where it is now the results are shown
    page.mouse.click(bb["x"] + 0.75 * bb["width"], bb["y"] + 0.5 * bb["height"])
    page.keyboard.press("Delete")
    wait_regions(page, "!t.includes('a blue square')")
    open_tab(page, "History")
    first = page.locator("#history-gallery .thumbnail-item").first
    first.wait_for(state="visible", timeout=UI_MS)
    first.click()
    page.wait_for_function("() => document.querySelector('#history-params').innerText.includes('a blue square')",
                           timeout=UI_MS)
    page.click("#history-reuse")
    wait_regions(page, "t.includes('a blue square')")
    assert regions_shown(page) == [region]


def test_a_box_without_a_prompt_is_refused_with_what_to_do(page, studio):
    open_tab(page, "Text → Image")
    page.fill("#t2i-prompt textarea", "a red circle")
    bb = open_regions(page)
    drag(page, bb, (0.1, 0.1), (0.4, 0.4))
    type_prompt(page, "")
    wait_regions(page, "t.includes('\"prompt\": \"\"')")
    before = newest_png(studio[1])
    page.click("#t2i-generate")
    page.locator("[data-testid=toast-body].error").first.wait_for(state="visible", timeout=GENERATION_MS)
    text = " ".join(toasts(page))
    assert "box 1 has no prompt" in text and "double-click" in text, text
    assert newest_png(studio[1]) == before
