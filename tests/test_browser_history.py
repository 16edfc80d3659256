"""History as an image browser in a real browser (issue 29, feature 5 and item 12), with the mouse and
keyboard: pages, search, the task filter, a star and favourites only, delete with its confirmation,
a zip of the page; captions readable and off the thumbnails. The browser is a visitor from another
machine (a forwarded address: not the operator), and another visitor's results are never shown.

    OMP_NUM_THREADS=1 python -m pytest tests/test_browser_history.py -x -q
"""
from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from servers import webui

import test_browser as tb
from ldm_core.history import owner_folder
from ldm_core.provenance import read_parameters, save_png

browser, screenshot, UI_MS = tb.browser, tb.screenshot, tb.UI_MS      # chromium (skips without it)
LIST_MS = 60_000      # a listing while the server still calibrates its models on a slow machine
ME, OTHER = "c" * 32, "d" * 32           # visitor ids (cookies)


def folder(out: Path, visitor: str) -> Path:
    return out / owner_folder(f"visitor:{visitor}")


def seed(out: Path, visitor: str, params: dict, n: int, start: float) -> list[Path]:
    """`n` results of `visitor` (as the studio saves them), the i-th at `start + i`: newer."""
    made = []
    for i in range(n):
        p = {"model": "tiny-text2img", "seed": 100 + i, "size": "16x16", "steps": 2, **params}
        p = {k: (v.format(i=i) if isinstance(v, str) else v) for k, v in p.items()}
        path = save_png(Image.new("RGB", (16, 16), (40 + 7 * i, 90, 200 - 5 * i)), p, folder(out, visitor))
        os.utime(path, (start + i, start + i))
        made.append(path)
    return made


@pytest.fixture(scope="module")
def studio(tiny_catalog, tmp_path_factory):
    out = tmp_path_factory.mktemp("history") / "out"
    with webui(tiny_catalog, out) as s:
        seed(out, ME, {"task": "text2img", "prompt": "a red circle number {i} with a very long prompt that goes on "
                       "and on past what a thumbnail could ever show"}, 26, 1_000_000)
        seed(out, ME, {"task": "layout2img", "model": "tiny-layout2img", "prompt": "",
                       "boxes": [{"label": "blue square", "box": [0.1, 0.1, 0.6, 0.6]}]}, 3, 1_000_100)
        seed(out, ME, {"task": "img2img", "model": "tiny-img2img", "prompt": "a watercolour fox"}, 1, 1_000_200)
        seed(out, OTHER, {"task": "text2img", "prompt": "someone else's secret"}, 2, 1_000_300)
        yield s


@pytest.fixture
def page(browser, studio):
    ctx = browser.new_context(viewport=tb.VIEWPORT, accept_downloads=True,
                              extra_http_headers={"X-Forwarded-For": "203.0.113.9"})   # not the operator
    ctx.add_cookies([{"name": "ldm_visitor", "value": ME, "url": studio.url}])
    ctx.set_default_timeout(UI_MS)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(studio.url, wait_until="domcontentloaded", timeout=60_000)
    pg.wait_for_selector("#t2i-prompt textarea", timeout=60_000)          # the app is up
    pg.get_by_role("tab", name="History").click()
    wait_text(pg, "#history-page", "30 results")
    yield pg
    ctx.close()
    assert not errors, f"uncaught page errors: {errors}"


def wait_text(page, selector: str, text: str) -> None:
    page.wait_for_function("([s, t]) => (document.querySelector(s)?.innerText || '').includes(t)",
                           arg=[selector, text], timeout=LIST_MS)


def thumbnails(page):
    return page.locator("#history-gallery .thumbnail-item")


def marks(page) -> list[str]:
    return page.locator("#history-marked label").all_inner_texts()


def test_pages_search_and_the_task_filter_with_the_mouse(page, studio):
    assert "Page 1 of 2" in page.locator("#history-page").inner_text()
    assert thumbnails(page).count() == 24
    assert marks(page)[0].startswith("1. img2img · a watercolour fox")          # newest first, readable
    assert "someone else" not in page.locator("#history-marked").inner_text()
    label = thumbnails(page).first.locator(".caption-label")                  # nothing over the thumbnails
    assert label.count() == 0 or not label.is_visible()
    page.click("#history-next")
    wait_text(page, "#history-page", "Page 2 of 2")
    assert thumbnails(page).count() == 6 and page.locator("#history-next").is_disabled()
    page.click("#history-previous")
    wait_text(page, "#history-page", "Page 1 of 2")

    page.locator("#history-search input, #history-search textarea").first.click()
    page.keyboard.type("BLUE Sq")
    wait_text(page, "#history-page", "3 results matching")
    assert all("blue square" in m for m in marks(page)) and thumbnails(page).count() == 3
    page.keyboard.press("Control+A")
    page.keyboard.press("Backspace")
    wait_text(page, "#history-page", "30 results")

    page.locator("#history-task input").click()
    page.get_by_role("option", name="Image → Image", exact=True).click()
    wait_text(page, "#history-page", "1 result matching")
    assert thumbnails(page).count() == 1
    thumbnails(page).first.click()
    wait_text(page, "#history-summary", "a watercolour fox")
    screenshot(page, "history-browser-filtered")
    page.locator("#history-task input").click()
    page.get_by_role("option", name="Every task", exact=True).click()
    wait_text(page, "#history-page", "30 results")


def test_star_delete_with_confirmation_and_download_a_zip(page, studio):
    mine = folder(studio.out, ME)
    thumbnails(page).nth(1).click()                                       # the newest layout result
    wait_text(page, "#history-summary", "blue square")
    page.click("#history-star")
    wait_text(page, "#history-star", "Unfavourite")
    wait_text(page, "#history-marked", "★")
    starred = json.loads((mine / "favourites.json").read_text())["favourites"]
    assert len(starred) == 1 and read_parameters(mine / starred[0])["task"] == "layout2img"
    page.locator("#history-favourites-only input").click()
    wait_text(page, "#history-page", "1 result matching")
    page.locator("#history-favourites-only input").click()
    wait_text(page, "#history-page", "Page 1 of 2 · 30 results")

    before = sorted(mine.glob("*.png"))
    page.locator("#history-marked label").nth(2).click()                  # tick two results of the page
    page.locator("#history-marked label").nth(3).click()
    page.click("#history-delete")
    wait_text(page, "#history-confirm-text", "Really delete these 2 results?")
    screenshot(page, "history-browser-confirm")
    page.click("#history-cancel")
    page.locator("#history-really-delete").wait_for(state="hidden", timeout=UI_MS)
    assert sorted(mine.glob("*.png")) == before                         # cancelled: nothing deleted
    page.click("#history-delete")
    page.click("#history-really-delete")
    wait_text(page, "#history-page", "28 results")
    assert len(list(mine.glob("*.png"))) == 28 and len(list(folder(studio.out, OTHER).glob("*.png"))) == 2

    page.click("#history-zip")
    download = page.locator("#history-download")
    download.wait_for(state="visible", timeout=UI_MS)
    assert re.search(r"Download 24 results on this page", download.inner_text())
    with page.expect_download(timeout=UI_MS) as got:
        download.click()
    path = got.value.path()
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        assert len(names) == 24 and all(n.endswith(".png") for n in names)
        assert all((mine / n).read_bytes() == z.read(n) for n in names)   # byte for byte: parameters intact
    screenshot(page, "history-browser")
