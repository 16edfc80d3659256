"""Presets (issue 29, feature 6): a tab's settings saved under a name in this browser and loaded back;
size presets per model. Driven with the mouse and keyboard in chromium.

    OMP_NUM_THREADS=1 python -m pytest tests/test_browser_presets.py -x -q
"""
from __future__ import annotations

import test_browser as tb  # skips this module too where chromium or playwright is missing
from test_browser import UI_MS, open_tab

browser, page, studio = tb.browser, tb.page, tb.studio   # its fixtures


def set_number(page, selector: str, value: str) -> None:
    box = page.locator(selector)
    box.click(click_count=3)
    page.keyboard.type(value)
    page.keyboard.press("Tab")


def pick(page, dropdown_id: str, option: str) -> None:
    page.locator(f"#{dropdown_id} input").click()
    page.get_by_role("option", name=option).click()


def test_a_preset_saves_and_loads_the_tabs_settings_and_survives_a_reload(page):
    open_tab(page, "Text → Image")
    page.fill("#t2i-prompt textarea", "a magenta diamond")
    set_number(page, "#text2img-steps input[type=number]", "7")
    page.get_by_text("Presets: save this tab's settings").first.click()
    page.fill("#text2img-preset-name input, #text2img-preset-name textarea", "my draft")
    page.click("#text2img-preset-save")
    page.wait_for_function("() => document.querySelector('#text2img-preset-choice input').value === 'my draft'",
                           timeout=UI_MS)
    # change everything, then load the preset back
    page.fill("#t2i-prompt textarea", "something else")
    set_number(page, "#text2img-steps input[type=number]", "3")
    page.click("#text2img-preset-load")
    page.wait_for_function("() => document.querySelector('#t2i-prompt textarea').value === 'a magenta diamond'",
                           timeout=UI_MS)
    assert page.locator("#text2img-steps input[type=number]").input_value() == "7"
    # kept in the browser: a reload still offers it
    page.reload()
    page.wait_for_selector("#t2i-prompt textarea", timeout=60_000)
    page.get_by_text("Presets: save this tab's settings").first.click()
    pick(page, "text2img-preset-choice", "my draft")
    page.click("#text2img-preset-load")
    page.wait_for_function("() => document.querySelector('#t2i-prompt textarea').value === 'a magenta diamond'",
                           timeout=UI_MS)


def test_another_browser_does_not_see_the_preset(browser, studio):
    url, _ = studio
    contexts = [browser.new_context(), browser.new_context()]
    try:
        pages = [c.new_page() for c in contexts]
        for pg in pages:
            pg.goto(url)
            pg.wait_for_selector("#t2i-prompt textarea", timeout=60_000)
            pg.get_by_text("Presets: save this tab's settings").first.click()
        mine, theirs = pages
        mine.fill("#text2img-preset-name input, #text2img-preset-name textarea", "only mine")
        mine.click("#text2img-preset-save")
        mine.wait_for_function("() => document.querySelector('#text2img-preset-choice input').value === 'only mine'",
                               timeout=UI_MS)
        theirs.reload()
        theirs.wait_for_selector("#t2i-prompt textarea", timeout=60_000)
        theirs.get_by_text("Presets: save this tab's settings").first.click()
        theirs.locator("#text2img-preset-choice input").click()
        theirs.wait_for_timeout(500)
        assert theirs.get_by_role("option", name="only mine").count() == 0
    finally:
        for c in contexts:
            c.close()


def test_a_size_preset_sets_both_sliders(page):
    open_tab(page, "Text → Image")
    page.locator("#text2img-size-preset input").click()
    option = page.get_by_role("option").filter(has_text="landscape 4:3")
    label = option.inner_text()
    option.click()
    w, h = label.split(": ")[1].split("×")
    page.wait_for_function(f"() => document.querySelector('#text2img-width input[type=number]').value === '{w}'",
                           timeout=UI_MS)
    assert page.locator("#text2img-height input[type=number]").input_value() == h.strip()
