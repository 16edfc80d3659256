"""A run's progress in the browser (issue #29): a large live preview that nothing covers, a status
line with the stage, the step and the time left (hires: "upscaling 1 of 2"), Stop that keeps what
was finished, Stop inactive when nothing runs, and the keyboard: Ctrl+Enter generates, Esc stops.
Driven with the mouse and keyboard in Debian's chromium at a laptop's and a phone's size, on the
server and browser of tests/test_browser.py (whose fixtures these are).

    OMP_NUM_THREADS=1 python -m pytest -q tests/test_browser_progress.py
"""
from __future__ import annotations

import re

import test_browser as tb  # skips this module too where chromium or playwright is missing
from test_browser import GENERATION_MS, UI_MS, open_tab, screenshot, toasts

browser, studio = tb.browser, tb.studio   # its fixtures: a studio on tiny models, chromium

LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
LONG_MS = 4 * GENERATION_MS   # a stage of a long run reached, on a machine three times slower than ours


def new_page(browser, url: str, viewport: dict):
    ctx = browser.new_context(viewport=viewport)
    ctx.set_default_timeout(UI_MS)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, wait_until="domcontentloaded", timeout=60_000)
    page.wait_for_selector("#t2i-prompt textarea", timeout=60_000)
    return ctx, page, errors


def type_into(page, selector: str, value: str) -> None:
    box = page.locator(selector)
    box.click(click_count=3)
    page.keyboard.type(value)
    page.keyboard.press("Enter")


def status(page, prefix: str = "t2i") -> str:
    return page.locator(f"#{prefix}-status").inner_text()


def wait_status(page, pattern: str, prefix: str = "t2i", timeout: float = LONG_MS) -> str:
    """Wait until the status line matches the regular expression `pattern`; returns it."""
    page.wait_for_function("([id, p]) => new RegExp(p).test(document.querySelector(id).innerText)",
                           arg=[f"#{prefix}-status", pattern], timeout=timeout)
    return status(page, prefix)


def uncovered(page, selector: str) -> bool:
    """Nothing (an overlay, a spinner) lies over the middle of the element."""
    return page.locator(selector).first.evaluate("""(e) => { const r = e.getBoundingClientRect();
        const top = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
        return top === e || e.contains(top); }""")


def test_a_long_run_shows_a_large_uncovered_preview_its_time_left_and_esc_keeps_the_interrupted_image(browser,
                                                                                                    studio):
    ctx, page, errors = new_page(browser, studio[0], LAPTOP)
    try:
        open_tab(page, "Text → Image")
        assert page.locator("#t2i-stop").is_disabled()                  # nothing runs: Stop is inactive
        page.fill("#t2i-prompt textarea", "a red circle")
        for control, value in (("steps", "100"), ("width", "512"), ("height", "512")):
            type_into(page, f"#text2img-{control} input[type=number]", value)
        page.locator("#t2i-prompt textarea").click()
        page.keyboard.press("Control+Enter")                            # from the prompt box: runs, adds no line
        page.wait_for_function("() => !document.querySelector('#t2i-stop').disabled", timeout=GENERATION_MS)  # runs
        assert page.locator("#t2i-prompt textarea").input_value() == "a red circle"
        preview = page.locator("#t2i-preview img").first
        preview.wait_for(state="visible", timeout=LONG_MS)        # (the server may still be timing its models)
        text = wait_status(page, r"about .* left")
        assert re.match(r"Denoising · step \d+/100 · (?:\d+ min )?[\d.]+ s elapsed · about ", text), text
        box = preview.bounding_box()
        assert min(box["width"], box["height"]) >= 128, box               # not a 16 px speck
        assert uncovered(page, "#t2i-preview img") and uncovered(page, "#t2i-status .ldm-status")
        screenshot(page, "progress-running")
        page.keyboard.press("Escape")
        text = wait_status(page, r"^Stopped after")
        assert re.match(r"Stopped after 0 of 1 image, interrupted in denoising at step \d+ of 100", text), text
        page.locator("#t2i-gallery img").first.wait_for(state="visible", timeout=UI_MS)   # the interrupted one
        assert "interrupted at" in page.locator("#t2i-gallery").inner_text()
        assert page.locator("#t2i-preview img").count() == 0
        page.wait_for_function("() => document.querySelector('#t2i-stop').disabled", timeout=UI_MS)
        assert not [t for t in toasts(page) if "cancelled" == t.strip()]   # Stop is no error
        screenshot(page, "progress-stopped")
    finally:
        ctx.close()
    assert not errors, errors


def test_ctrl_enter_generates_in_another_tab_with_the_focus_anywhere(browser, studio):
    ctx, page, errors = new_page(browser, studio[0], LAPTOP)
    try:
        open_tab(page, "Unconditional")
        page.locator("#uncond-stop").wait_for(state="visible")
        assert page.locator("#uncond-stop").is_disabled()
        page.mouse.click(5, 5)                                           # the focus on the page, not a box
        page.keyboard.press("Control+Enter")
        text = wait_status(page, r"^Done: 1 image", prefix="uncond")
        assert page.locator("#uncond-gallery img").count() >= 1, text
        assert page.locator("#t2i-gallery img").count() == 0             # only the tab in sight ran
        page.wait_for_function("() => document.querySelector('#uncond-stop').disabled", timeout=UI_MS)
        page.keyboard.press("Escape")                                     # nothing runs: Esc does nothing
        page.wait_for_timeout(300)
        assert status(page, "uncond").startswith("Done")
    finally:
        ctx.close()
    assert not errors, errors


def test_hires_on_a_phone_says_upscaling_and_stop_keeps_the_finished_images(browser, studio):
    ctx, page, errors = new_page(browser, studio[0], PHONE)
    out = studio[1]
    try:
        open_tab(page, "Text → Image")
        page.fill("#t2i-prompt textarea", "a blue square")
        for control, value in (("width", "128"), ("height", "128")):
            type_into(page, f"#text2img-{control} input[type=number]", value)
        type_into(page, "#t2i-settings input[type=number][aria-label='number input for Images']", "3")
        page.locator("#text2img-hires input[type=checkbox]").check()
        before = set(out.glob("**/text2img-*.png"))
        page.locator("#t2i-generate").scroll_into_view_if_needed()
        page.click("#t2i-generate")
        text = wait_status(page, r"^Upscaling [23] of 3 · step")
        assert re.match(r"Upscaling [23] of 3 · step \d+/\d+ · (?:\d+ min )?[\d.]+ s elapsed · ", text), text
        page.locator("#t2i-status").scroll_into_view_if_needed()
        screenshot(page, "progress-phone-hires")
        page.click("#t2i-stop")
        text = wait_status(page, r"^Stopped after")
        finished = int(re.match(r"Stopped after (\d) of 3 images", text).group(1))
        assert finished >= 1, text
        kept = [p for p in out.glob("**/text2img-*.png") if p not in before]
        assert len(kept) == finished                                      # saved, like any result
        page.wait_for_function("(n) => document.querySelectorAll('#t2i-gallery img').length >= n",
                               arg=finished, timeout=UI_MS)
        shown = page.locator("#t2i-gallery").inner_text()
        assert shown.count("finished") == finished and "interrupted at" in shown, shown
        screenshot(page, "progress-phone-stopped")
        assert page.locator("#t2i-stop").is_disabled()
    finally:
        ctx.close()
    assert not errors, errors


def test_stop_takes_a_waiting_request_out_of_the_queue(browser, studio):
    """Two visitors: the second one's request waits behind the first one's long run; its Stop is active
    while it waits, and takes it out of the queue before it starts."""
    (ctx1, first, errors1), (ctx2, second, errors2) = (new_page(browser, studio[0], LAPTOP) for _ in range(2))
    try:
        first.fill("#t2i-prompt textarea", "a red circle")
        for control, value in (("steps", "100"), ("width", "512"), ("height", "512")):
            type_into(first, f"#text2img-{control} input[type=number]", value)
        first.click("#t2i-generate")
        wait_status(first, r"^Denoising · step")                          # it runs
        second.fill("#t2i-prompt textarea", "a blue square")
        second.click("#t2i-generate")
        second.get_by_text("queue: 1/1").first.wait_for(state="visible", timeout=UI_MS)
        assert second.locator("#t2i-stop").is_enabled()
        second.click("#t2i-stop")
        second.get_by_text("Stopped before it started.").first.wait_for(state="visible", timeout=UI_MS)
        second.wait_for_function("() => document.querySelector('#t2i-stop').disabled", timeout=UI_MS)
        first.click("#t2i-stop")
        wait_status(first, r"^Stopped after")
        second.wait_for_timeout(1000)
        assert second.locator("#t2i-gallery img").count() == 0           # it never ran
    finally:
        ctx1.close()
        ctx2.close()
    assert not errors1 and not errors2, errors1 + errors2
