"""The layout stage in the Text -> Image tab, driven with the mouse in Debian's chromium: a relation
caption is generated, the planned boxes show (drawn over the result, and as JSON), "Edit these boxes in
the Layout tab" brings them into the Layout tab's editor with the caption, a box is moved there with the
Select tool, and the Layout tab draws the edited layout. The studio runs on tiny models whose default
text model names the trained planner (models/shapes-layout-planner) and the tiny layout model.

    OMP_NUM_THREADS=1 python -m pytest -q tests/test_browser_planner.py
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import test_browser as tb  # skips this module too where chromium or playwright is missing
from servers import webui
from test_browser import GENERATION_MS, UI_MS, VIEWPORT, open_tab, wait_gallery

from ldm_core.provenance import read_parameters
from ldm_core.testing import write_tiny_catalog
from test_planner import PLANNED, PLANNER

browser = tb.browser
CAPTION = "a red circle left of a blue square"
# the text tab's default model: tiny-planned of test_planner.py, its stage on
PLANNED = PLANNED.format(planner=PLANNER, layout="tiny-layout2img", on="true").replace(
    'task = "text2img"\n', 'task = "text2img"\ndefault = true\n', 1)


@pytest.fixture(scope="module")
def planned_studio(tmp_path_factory):
    root = tmp_path_factory.mktemp("planner-studio")
    base = write_tiny_catalog(root / "models").read_text()
    # tiny-planned is the text tab's default model: the first text2img entry loses its default
    first = base.index('name = "tiny-text2img"')
    base = base[:first] + base[first:].replace("default = true\n", "", 1)
    (root / "models" / "planned.toml").write_text(base + PLANNED)
    with webui(root / "models" / "planned.toml", root / "outputs", "--offline", timeout=120) as server:
        yield server


@pytest.fixture
def page(browser, planned_studio):
    ctx = browser.new_context(viewport=VIEWPORT)
    ctx.set_default_timeout(UI_MS)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(planned_studio.url, wait_until="domcontentloaded", timeout=60_000)
    pg.wait_for_selector("#t2i-prompt textarea", timeout=60_000)
    yield pg
    ctx.close()
    assert not errors, f"uncaught page errors: {errors}"


def code_text(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} .cm-content").inner_text()


def wait_code(page, elem_id: str, predicate: str, timeout: int = UI_MS) -> None:
    page.wait_for_function(f"() => {{ const e = document.querySelector('#{elem_id} .cm-content'); "
                           f"const t = e ? e.innerText : ''; return {predicate}; }}", timeout=timeout)


def newest(out: Path, task: str) -> Path:
    return sorted(out.glob(f"**/{task}-*.png"), key=lambda p: p.stat().st_mtime)[-1]


def test_planned_boxes_show_and_go_to_the_layout_tab_for_editing(page, planned_studio, tmp_path):
    open_tab(page, "Text → Image")
    page.locator("#t2i-prompt textarea").click()
    page.keyboard.type(CAPTION)
    assert not page.locator("#t2i-plan").first.is_visible()             # nothing planned yet
    page.locator("#t2i-generate").click()
    wait_gallery(page, "t2i-gallery")
    wait_code(page, "t2i-plan-boxes", "t.includes('blue square')", GENERATION_MS)
    planned = json.loads(code_text(page, "t2i-plan-boxes"))
    assert [b["label"] for b in planned] == ["red circle", "blue square"]
    assert sum(planned[0]["box"][0::2]) < sum(planned[1]["box"][0::2])     # the circle's centre is left
    saved = read_parameters(newest(planned_studio.out, "text2img"))
    assert saved["planned_boxes"] == planned and saved["task"] == "text2img"
    drawn = page.locator("#t2i-plan-image img")
    drawn.wait_for(state="visible")
    assert drawn.evaluate("e => e.naturalWidth") == 256
    page.locator("#t2i-plan").first.scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "planned.png"))

    page.locator("#t2i-plan-send").click()                           # to the Layout tab
    page.locator("#layout-canvas canvas").first.wait_for(state="visible")
    wait_code(page, "layout-boxes", "t.includes('red circle') && t.includes('blue square')")
    sent = json.loads(code_text(page, "layout-boxes"))
    assert [b["label"] for b in sent] == ["red circle", "blue square"]
    for got, want in zip(sent, planned):
        assert max(abs(a - b) for a, b in zip(got["box"], want["box"])) < 0.01, (got, want)
    assert page.locator("#layout-prompt textarea").input_value() == CAPTION

    # edit: the Select tool, then drag the blue square down by a quarter of the canvas
    canvas = page.locator("#layout-canvas canvas").first
    canvas.scroll_into_view_if_needed()
    bb = canvas.bounding_box()
    page.locator("#layout-canvas button[aria-label='Drag boxes']").click()
    x0, y0, x1, y1 = sent[1]["box"]
    cx, cy = bb["x"] + (x0 + x1) / 2 * bb["width"], bb["y"] + (y0 + y1) / 2 * bb["height"]
    dy = (0.2 if y1 < 0.75 else -0.2) * bb["height"]
    page.mouse.move(cx, cy)
    page.mouse.down()
    for i in range(1, 11):
        page.mouse.move(cx, cy + dy * i / 10)
    page.mouse.up()
    wait_code(page, "layout-boxes", f"Math.abs(JSON.parse(t)[1].box[1] - {y0}) > 0.1")
    edited = json.loads(code_text(page, "layout-boxes"))
    assert abs(edited[0]["box"][1] - sent[0]["box"][1]) < 0.01        # the other box stays
    page.screenshot(path=str(tmp_path / "sent.png"))

    page.locator("#layout-generate").click()
    wait_gallery(page, "layout-gallery")
    page.wait_for_function("() => document.querySelector('#layout-info').innerText.includes('blue square')",
                           timeout=GENERATION_MS)
    drawn_layout = read_parameters(newest(planned_studio.out, "layout2img"))["boxes"]
    assert [b["label"] for b in drawn_layout] == ["red circle", "blue square"]
    assert abs(drawn_layout[1]["box"][1] - edited[1]["box"][1]) < 0.01


def test_the_stage_switched_off_shows_no_plan(page, planned_studio):
    open_tab(page, "Text → Image")
    page.locator("#t2i-prompt textarea").click()
    page.keyboard.type(CAPTION)
    page.locator("#t2i-plan-layout").get_by_label("off").click()
    page.locator("#t2i-generate").click()
    wait_gallery(page, "t2i-gallery")
    page.wait_for_function("() => document.querySelector('#t2i-info').innerText.includes('seed')",
                           timeout=GENERATION_MS)
    assert "planned_boxes" not in page.locator("#t2i-info").inner_text()
    assert not page.locator("#t2i-plan").first.is_visible()
