"""Two visitors on a server with two devices (`--devices cpu,cpu`, issue #30), in chromium with the mouse:
both runs go at once (each status line counts steps, neither waits in the queue), Stop on one keeps
the other running to its image.

    OMP_NUM_THREADS=1 python -m pytest -q tests/test_browser_devices.py
"""
from __future__ import annotations

import pytest

import test_browser as tb  # skips this module too where chromium or playwright is missing
from servers import webui
from test_browser import open_tab
from test_browser_progress import LAPTOP, LONG_MS, new_page, type_into, wait_status

browser = tb.browser


@pytest.fixture(scope="module")
def two_devices(tiny_catalog, tmp_path_factory):
    with webui(tiny_catalog, tmp_path_factory.mktemp("devices") / "out", "--devices", "cpu,cpu",
               "--max-seconds", "300") as s:
        yield s


def start_long_run(page) -> None:
    open_tab(page, "Text → Image")
    page.fill("#t2i-prompt textarea", "a red circle")
    for control, value in (("steps", "100"), ("width", "256"), ("height", "256")):
        type_into(page, f"#text2img-{control} input[type=number]", value)
    page.locator("#t2i-generate").click()


def test_two_visitors_run_at_once_and_stop_on_one_leaves_the_other_running(browser, two_devices):
    (ca, a, errors_a), (cb, b, errors_b) = (new_page(browser, two_devices.url, LAPTOP) for _ in range(2))
    try:
        assert "cpu, cpu" in a.locator("body").inner_text()            # the header names both devices
        start_long_run(a)
        start_long_run(b)
        wait_status(a, r"^Denoising · step \d+/100")
        wait_status(b, r"^Denoising · step \d+/100")                    # both count steps: both run now
        a.locator("#t2i-stop").click()
        stopped = wait_status(a, r"^Stopped after 0 of 1 image")
        assert "interrupted" in stopped
        assert b.locator("#t2i-status").inner_text().startswith("Denoising")    # still running
        done = wait_status(b, r"^Done: 1 image", timeout=LONG_MS * 3)
        assert b.locator("#t2i-gallery img").count() >= 1, done
        tb.SHOTS.mkdir(parents=True, exist_ok=True)
        b.screenshot(path=str(tb.SHOTS / "devices-other-finished.png"))      # the window, to look at
        assert not errors_a and not errors_b
    finally:
        ca.close()
        cb.close()
