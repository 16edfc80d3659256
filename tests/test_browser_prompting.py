"""Prompt syntax in Text → Image, typed with the keyboard in Debian's chromium (issue 29): the token
counter under the prompt (weights not counted; over the limit it names what is cut off), and a
wildcard prompt whose pick shows in "Parameters used". Same server and browser set-up as
tests/test_browser.py (whose fixtures these are).

    OMP_NUM_THREADS=1 python -m pytest -q tests/test_browser_prompting.py
"""
from __future__ import annotations

import json

import test_browser as tb  # skips this module too where chromium or playwright is missing
from test_browser import GENERATION_MS, UI_MS, open_tab, screenshot, wait_gallery

from ldm_core.prompts import expand

browser, page, studio = tb.browser, tb.page, tb.studio   # its fixtures: a studio on tiny models, chromium

COUNTER = "#text2img-tokens [data-testid=markdown]"    # its text (not the hidden status timer beside it)
LIMIT = 22                 # the tiny built-in model reads 24 tokens: <bos>, 22 words, <eos>


def type_prompt(page, text: str) -> None:
    """Click into the prompt, clear it with the keyboard and type `text` as a person would."""
    box = page.locator("#t2i-prompt textarea")
    box.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.type(text, delay=5)


def counter_shows(page, text: str) -> str:
    """Wait until the counter line holds `text`; its whole line."""
    page.wait_for_function("([sel, t]) => (document.querySelector(sel)?.innerText || '').includes(t)",
                           arg=[COUNTER, text], timeout=UI_MS)
    return page.locator(COUNTER).inner_text()


def test_the_token_counter_follows_typing_and_names_what_is_cut(page):
    open_tab(page, "Text → Image")
    type_prompt(page, "a (red:1.3) circle left of a [blue] square")
    assert counter_shows(page, f"8 / {LIMIT} tokens").strip() == f"8 / {LIMIT} tokens"    # brackets not counted
    page.locator(COUNTER).scroll_into_view_if_needed()
    screenshot(page, "prompting-counter")
    page.keyboard.type(" and a green diamond above a cyan triangle and a red square below a yellow circle",
                       delay=5)
    line = counter_shows(page, "cut off: 'yellow circle'")
    assert line.strip() == f"⚠ 24 / {LIMIT} tokens: this model reads {LIMIT}; cut off: 'yellow circle'", line
    prompt = page.locator("#t2i-prompt").bounding_box()
    counter = page.locator(COUNTER).bounding_box()
    assert 0 <= counter["y"] - (prompt["y"] + prompt["height"]) < 60, (prompt, counter)   # right under the prompt
    screenshot(page, "prompting-counter-over")
    type_prompt(page, "a (red circle")
    assert "never closed" in counter_shows(page, "never closed")


def test_a_wildcard_prompt_records_its_pick(page, studio):
    template = "a {red|blue|green} __shapes__"
    open_tab(page, "Text → Image")
    type_prompt(page, template)
    # the whole template's count (a key typed earlier may still be answering: wait for this one)
    assert counter_shows(page, f"3 / {LIMIT} tokens").strip() == f"3 / {LIMIT} tokens (one pick of the wildcards)"
    page.click("#t2i-generate")
    wait_gallery(page, "t2i-gallery")
    page.wait_for_function("() => document.querySelector('#t2i-info').innerText.includes('prompts')",
                           timeout=GENERATION_MS)
    text = page.locator("#t2i-info .cm-content").inner_text()
    info = json.loads(text)
    assert info["prompt"] == template
    used, = info["prompts"]
    assert used == expand(template, info["seed"]) and "{" not in used and "__" not in used
    assert used.split()[1] in ("red", "blue", "green") and used.split()[2] in ("circle", "square", "triangle",
                                                                               "diamond")
    screenshot(page, "prompting-wildcards")


def test_a_prompt_search_and_replace_plot_from_readable_axis_names(page, studio):
    open_tab(page, "Text → Image")
    type_prompt(page, "a red circle")
    page.get_by_text("X/Y plot: one parameter against another").click()
    page.locator("#xy-x-axis input").click()
    options = [t.replace("✓", "").strip() for t in page.get_by_role("option").all_inner_texts()]   # ✓: chosen
    assert "guidance scale (CFG)" in options and "prompt S/R" in options and "guidance_scale" not in options
    page.get_by_role("option", name="prompt S/R", exact=True).click()
    values = page.locator("#xy-x-values textarea, #xy-x-values input").first
    values.click()
    page.keyboard.press("Control+A")
    page.keyboard.type("red|blue|green")
    page.locator("#xy-y-axis input").click()
    page.get_by_role("option", name="(none)", exact=True).click()
    before = set(studio[1].glob("**/text2img-*.png"))
    page.click("#xy-plot")
    wait_gallery(page, "t2i-gallery")
    page.wait_for_function("() => document.querySelector('#t2i-info').innerText.includes('prompt_sr')",
                           timeout=GENERATION_MS)
    made = [p for p in studio[1].glob("**/text2img-*.png") if p not in before]
    from ldm_core.provenance import read_parameters
    plot = read_parameters(made[-1])["xyplot"]
    assert plot["x_axis"] == "prompt_sr" and plot["x_values"] == ["red", "blue", "green"]
    screenshot(page, "prompting-xyplot")
