"""A newcomer's first visit (issue 29): each thing that went wrong, driven with the mouse in chromium.

    OMP_NUM_THREADS=1 python -m pytest tests/test_browser_firstvisit.py -x -q
"""
from __future__ import annotations

import contextlib
import re

from PIL import Image
import test_browser as tb  # skips this module too where chromium or playwright is missing
from test_browser import UI_MS, generate_text2img, open_tab, screenshot, toasts, wait_gallery

browser, page, studio = tb.browser, tb.page, tb.studio   # its fixtures


@contextlib.contextmanager
def phone(browser, studio):
    """A page of the studio on a 390x844 screen."""
    ctx = browser.new_context(viewport={"width": 390, "height": 844})
    ctx.set_default_timeout(UI_MS)
    pg = ctx.new_page()
    try:
        pg.goto(studio[0], wait_until="domcontentloaded", timeout=60_000)
        pg.wait_for_selector("#t2i-prompt textarea", timeout=60_000)
        yield pg
    finally:
        ctx.close()


def server_log(studio) -> str:
    return (studio[1].parent / "server.log").read_text(errors="replace")


def test_a_layout_sent_back_from_png_info_generates_without_a_server_error(page, studio, tmp_path):
    """Item 7: a layout result's boxes sent back to the layout tab (PNG info's "Send to its tab"), then
    Generate: the annotator's value comes back to the server and must be readable (it was a TypeError
    in gradio_image_annotation, an HTTP 500, when a box colour was a list)."""
    from ldm_core.provenance import save_png
    params = {"task": "layout2img", "prompt": "a red circle", "negative_prompt": "", "steps": 3, "sampler": "DDIM",
              "guidance_scale": 3.0, "seed": 5, "size": "64x64", "model": "tiny-layout2img",
              "boxes": [{"label": "red circle", "box": [0.1, 0.1, 0.6, 0.6]}]}
    path = save_png(Image.new("RGB", (64, 64), "white"), params, tmp_path)
    before = server_log(studio)
    open_tab(page, "PNG info")
    page.locator("#pnginfo-file input[type=file]").set_input_files(str(path))
    page.wait_for_function(
        "() => [...document.querySelectorAll('textarea')].some(t => t.value.includes('Task: layout2img'))",
        timeout=UI_MS)
    page.click("#pnginfo-send")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#layout-boxes .cm-content')].some(e => e.innerText.includes('red'))",
        timeout=UI_MS)
    page.click("#layout-generate")
    wait_gallery(page, "layout-gallery")
    new_log = server_log(studio)[len(before):]
    assert "Traceback" not in new_log and "TypeError" not in new_log, new_log[-3000:]
    assert "Too much data" not in new_log, new_log[-3000:]


def test_send_to_image_to_image_carries_the_prompt(page, studio):
    """Item 8: a text->image result sent on keeps its prompt (the image's own, from its PNG)."""
    generate_text2img(page, "a green square")
    page.fill("#t2i-prompt textarea", "typed after generating")
    page.click("#t2i-send-img2img")
    page.locator("#i2i-input img").first.wait_for(state="visible", timeout=UI_MS)
    page.wait_for_function("() => document.querySelector('#i2i-prompt textarea').value === 'a green square'",
                           timeout=UI_MS)


def test_an_xy_grid_is_not_sent_on_as_a_picture(page, studio):
    """Item 8: the X/Y grid is several images in one; sending it to inpainting says so instead."""
    open_tab(page, "Text → Image")
    page.fill("#t2i-prompt textarea", "a blue square")
    page.get_by_text("X/Y plot: one parameter against another").click()
    x_values = page.locator("#xy-x-values textarea, #xy-x-values input").first
    x_values.fill("2, 3")
    page.locator("#xy-plot").click()
    wait_gallery(page, "t2i-gallery")
    page.click("#t2i-send-inpaint")
    page.locator("[data-testid=toast-body].error").first.wait_for(state="visible", timeout=UI_MS)
    assert any("X/Y grid" in t for t in toasts(page)), toasts(page)
    assert page.get_by_role("tab", name="Text → Image").get_attribute("aria-selected") == "true"


def test_a_size_beyond_the_native_one_says_so(page):
    """Item 3: the native size is named; past it, a hint says what happens and suggests Hires."""
    open_tab(page, "Text → Image")
    hint = page.locator("#text2img-size-hint")
    assert re.search(r"Native size of this model: \d+×\d+", hint.inner_text())
    box = page.locator("#text2img-width input[type=number]")
    box.click(click_count=3)
    page.keyboard.type("256")
    page.keyboard.press("Tab")           # on to the next control, as a user does
    try:
        page.wait_for_function("() => document.querySelector('#text2img-size-hint').innerText.includes('Hires')",
                               timeout=UI_MS)
    except Exception:
        screenshot(page, "firstvisit-size-hint")
        raise AssertionError(hint.inner_text())
    assert "trained at" in hint.inner_text()


def test_layout_results_are_in_sight_of_generate(page):
    """Item 4: at 1366x900 the layout tab's preview and results start within the first screen."""
    page.set_viewport_size({"width": 1366, "height": 900})
    open_tab(page, "Layout → Image")
    page.locator("#layout-generate").wait_for(state="visible")
    top = page.locator("#layout-gallery").bounding_box()["y"]
    assert top < 900, f"the layout results start {top:.0f} px down"
    screenshot(page, "firstvisit-layout-1366")


def test_on_a_phone_the_xy_plot_brings_its_results_into_sight(browser, studio):
    """Item 4: on a phone the Plot button sits far below the results: clicking it scrolls them in."""
    with phone(browser, studio) as pg:
        pg.fill("#t2i-prompt textarea", "a blue square")
        pg.get_by_text("X/Y plot: one parameter against another").click()
        pg.fill("#xy-x-values textarea, #xy-x-values input", "2, 3")
        plot = pg.locator("#xy-plot")
        plot.scroll_into_view_if_needed()
        assert pg.locator("#t2i-status").bounding_box()["y"] < 0      # the results are above, out of sight
        plot.click()
        pg.wait_for_function("() => { const r = document.querySelector('#t2i-status').getBoundingClientRect();"
                             " return r.top >= 0 && r.top < window.innerHeight; }", timeout=UI_MS)
        wait_gallery(pg, "t2i-gallery")


def test_parameters_used_wrap_without_line_numbers(page):
    """Item 12: "Parameters used" shows every line whole, with no line numbers out of step."""
    generate_text2img(page, "a cyan square, a red triangle and a blue circle " * 3)
    page.wait_for_function("() => document.querySelector('#t2i-info .cm-content').innerText.includes('cyan')",
                           timeout=UI_MS)
    gutters = page.locator("#t2i-info .cm-gutters")
    assert gutters.count() == 0 or not gutters.first.is_visible()
    content = page.locator("#t2i-info .cm-content")
    wide = page.evaluate("(e) => e.scrollWidth - e.clientWidth", content.element_handle())
    assert wide <= 2, f"a line runs {wide} px past the panel"


def test_the_header_speaks_plainly(page):
    """Item 12: no "resident model stack" jargon in the page's first lines."""
    header = page.locator("h2").first.locator("xpath=..").inner_text()
    assert "resident" not in header and "stack" not in header, header


def test_png_info_shows_the_picture(page, tmp_path):
    """Item 12: PNG info shows the picture it reads, not only its parameters."""
    from ldm_core.provenance import save_png
    path = save_png(Image.new("RGB", (64, 64), "red"), {"task": "text2img", "prompt": "a red square", "seed": 1},
                    tmp_path)
    open_tab(page, "PNG info")
    page.locator("#pnginfo-file input[type=file]").set_input_files(str(path))
    page.locator("#pnginfo-picture img").first.wait_for(state="visible", timeout=UI_MS)


def test_on_a_phone_every_result_and_the_label_field_fit_the_screen(browser, studio):
    """Item 11: four results all inside a 390 px screen; the layout label field wide enough to type in."""
    with phone(browser, studio) as pg:
        pg.fill("#t2i-prompt textarea", "a red circle")
        images = pg.locator("#t2i-settings .block").filter(has_text="Images").locator("input[type=number]")
        images.click(click_count=3)
        pg.keyboard.type("4")
        pg.keyboard.press("Tab")
        pg.click("#t2i-generate")
        pg.locator("#t2i-gallery img").nth(3).wait_for(timeout=60_000)
        right = pg.evaluate("() => Math.max(...[...document.querySelectorAll('#t2i-gallery img')]"
                            ".map(i => i.getBoundingClientRect().right))")
        assert right <= 390, f"a result reaches {right:.0f} px on a 390 px screen"
        open_tab(pg, "Layout → Image")
        canvas = pg.locator("#layout-canvas canvas").first
        canvas.scroll_into_view_if_needed()
        bb = canvas.bounding_box()
        pg.mouse.move(bb["x"] + 30, bb["y"] + 30)
        pg.mouse.down()
        pg.mouse.move(bb["x"] + 120, bb["y"] + 120, steps=8)
        pg.mouse.up()
        field = pg.locator("#model-box-edit input[aria-label=Label]")
        field.wait_for(state="visible")
        assert field.bounding_box()["width"] >= 150, field.bounding_box()
        field.fill("red circle")
        field.press("Enter")


def test_text2img_says_what_the_built_in_model_draws(page):
    """Item 12: Text -> Image names the built-in model's words, as the Layout tab does."""
    open_tab(page, "Text → Image")
    knows = page.locator("#t2i-knows").inner_text()
    assert "circle" in knows and "left of" in knows, knows
