"""Bad uploads and out-of-range numbers in Debian's chromium (issue #29, items 5 and 6): a text file named
x.png and a 3000×3000 PNG put into every image input of every tab get the studio's own message at once (a
toast naming the file, what is wrong and the limit), never Gradio's internals, and leave the input empty; the
same file sent straight to Generate over raw HTTP gets the same message; a number typed past a slider's ends
is said to have been changed. Same server and browser set-up as tests/test_browser.py (its fixtures).

    OMP_NUM_THREADS=1 python -m pytest -q tests/test_browser_uploads.py
"""
from __future__ import annotations

import io

import httpx
import pytest
import test_browser as tb  # skips this module too where chromium or playwright is missing
from PIL import Image
from test_browser import UI_MS, VIEWPORT

browser, studio = tb.browser, tb.studio      # its fixtures: a studio on tiny models, chromium

SERVER_MS = 60_000       # a warning from the server: the tiny models' calibration may hold it at first
INTERNALS = ("Could not preprocess", "UnidentifiedImageError", "DecompressionBomb", "Traceback")
NOT_AN_IMAGE = "x.png is not an image (PNG, JPEG or WebP expected)"
LARGE = "big.png is 3000×3000, 9.0 megapixels; images up to {} are accepted here"
MP1, MP026 = "1.0 megapixels (e.g. 1024×1024)", "0.26 megapixels (e.g. 512×512)"
# every input a user can put an image file into: (tab, its elem_id, the pixels it takes, an editor)
INPUTS = [("Super-resolution", "sr-input", MP026, False), ("Image → Image", "i2i-input", MP1, False),
          ("Inpainting", "inpaint-editor", MP1, True), ("Semantic → Image", "s2i-editor", MP1, True),
          ("Semantic → Image", "s2i-upload", MP1, False), ("Perceptual compression", "compress-input", MP026, False),
          ("PNG info", "pnginfo-file", MP1, False)]
# the image editor itself reports a file the browser cannot decode as an uncaught error (Gradio's own)
EDITOR_OWN_ERRORS = ("The source image could not be decoded",)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uploads")
    (folder / "x.png").write_text("hello, this is text and not an image\n")
    Image.new("RGB", (3000, 3000), (30, 60, 90)).save(folder / "big.png")     # 9 MP in 33 kB
    return folder


@pytest.fixture
def page(browser, studio):
    ctx = browser.new_context(viewport=VIEWPORT)
    ctx.set_default_timeout(UI_MS)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(studio[0], wait_until="domcontentloaded", timeout=60_000)
    pg.wait_for_selector("#t2i-prompt textarea", timeout=60_000)
    yield pg
    ctx.close()
    assert not [e for e in errors if not e.startswith(EDITOR_OWN_ERRORS)], errors


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click(timeout=SERVER_MS)     # a busy server's progress may cover it a while


def says(page, text: str) -> None:
    """`text` shows in a toast, and nothing of Gradio's internals anywhere on the page."""
    page.locator("[data-testid=toast-text]", has_text=text).first.wait_for(state="visible", timeout=SERVER_MS)
    body = page.locator("body").inner_text()
    assert not [w for w in INTERNALS if w in body], body[-2000:]


def settled(page, elem_id: str) -> None:
    """The input is on the page and done drawing itself: an editor's canvas is zoomed to fit, and its
    file input stays the same one for a second (a model's defaults, set as the page starts, may redraw
    an editor with a new one)."""
    box = page.locator(f"#{elem_id}")
    box.wait_for(state="visible")
    if box.locator("canvas").count():
        page.wait_for_function("(e) => e.querySelector('.zoom-number')?.innerText.trim()",
                               arg=box.element_handle(), timeout=UI_MS)
    for _ in range(SERVER_MS // 1000):
        handle = box.locator("input[type=file]").first.element_handle()
        page.wait_for_timeout(1000)
        if handle.evaluate("(e) => e.isConnected"):
            return


def put(page, tab: str, elem_id: str, path, message: str, tries: int = 3) -> None:
    """Put `path` into the input's file chooser, as the upload button's dialog does; on a fresh page again
    if no word of it came (a server busy starting up may still redraw an editor, and its file input, at
    first: the file then went to the one taken off the page)."""
    for _ in range(tries):
        page.locator(f"#{elem_id} input[type=file]").first.set_input_files(str(path))
        try:
            page.locator("[data-testid=toast-text]", has_text=message).first.wait_for(state="visible",
                                                                                       timeout=SERVER_MS // 3)
            return
        except tb.sync_api.TimeoutError:
            page.reload(wait_until="domcontentloaded")
            page.wait_for_selector("#t2i-prompt textarea", timeout=60_000)
            open_tab(page, tab)
            settled(page, elem_id)


@pytest.mark.parametrize("tab,elem_id,accepted,editor", INPUTS, ids=[i[1] for i in INPUTS])
def test_a_bad_upload_gets_the_studios_message_at_once(page, files, tab, elem_id, accepted, editor):
    open_tab(page, tab)
    settled(page, elem_id)
    if editor:
        assert page.locator(f"#{elem_id}-upload-check").count() == 1, f"#{elem_id} has no upload check"
    # an editor: the file it drops without a word (a large one it shows, and says so at Generate; its
    # message at upload is tests/test_uploads.py's, as this browser gives it unreliably on a loaded machine)
    bad = [("x.png", NOT_AN_IMAGE)] + ([] if editor else [("big.png", LARGE.format(accepted))])
    for name, message in bad:
        put(page, tab, elem_id, files / name, message)
        says(page, message)
        if not editor:     # the input is emptied: no broken image, no file left to send
            page.wait_for_function("(e) => !e.querySelector('img') && !e.innerText.includes('.png')",
                                   arg=page.locator(f"#{elem_id}").element_handle(), timeout=SERVER_MS)


def test_a_bad_file_sent_straight_to_generate_gets_the_same_message(studio, files):
    """Past the browser (a script speaking Gradio's raw HTTP): refused before Gradio decodes it."""
    url = studio[0]
    cfg = httpx.get(url + "config", timeout=60).json()
    ids = {c.get("props", {}).get("elem_id"): c["id"] for c in cfg["components"]}
    values = {c["id"]: c.get("props", {}).get("value") for c in cfg["components"]}
    dep = max((d for d in cfg["dependencies"] if ids["sr-input"] in d["inputs"]), key=lambda d: len(d["inputs"]))
    for name, message in (("x.png", NOT_AN_IMAGE), ("big.png", LARGE.format(MP026))):
        up = httpx.post(url + "gradio_api/upload", files=[("files", (name, (files / name).read_bytes(), "image/png"))],
                        timeout=60)
        image = {"path": up.json()[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}
        data = [image if i == ids["sr-input"] else values[i] for i in dep["inputs"]]
        r = httpx.post(url + "gradio_api/queue/join", json={"data": data, "fn_index": dep["id"], "session_hash": name,
                                                             "trigger_id": ids["sr-generate"], "event_data": None},
                       timeout=60)
        assert r.status_code == 400 and message in r.text, r.text[:600]
        assert not [w for w in INTERNALS if w in r.text], r.text[:600]


def test_numbers_typed_past_a_sliders_ends_are_said_to_be_changed(page):
    open_tab(page, "Text → Image")
    for box, typed, message in ((page.locator("#text2img-steps input[type=number]"), "0",
                                 "Steps must be 1–100; 0 was changed to 1"),
                                (page.get_by_label("number input for Images").first, "50",
                                 "Images must be 1–8; 50 was changed to 8")):
        box.click(click_count=3)
        page.keyboard.type(typed)
        page.keyboard.press("Tab")                    # leaving the box: the browser puts the slider's end there
        says(page, message)
        assert box.input_value() == message.rsplit(" ", 1)[1]
    box = page.locator("#text2img-steps input[type=number]")
    box.click(click_count=3)
    page.keyboard.type("20")                          # within the range: nothing to say
    page.keyboard.press("Tab")
    page.wait_for_timeout(1500)
    assert page.locator("[data-testid=toast-text]", has_text="20 was changed").count() == 0
    tb.screenshot(page, "slider-out-of-range")


def test_the_upload_message_as_a_user_sees_it(page, files):
    open_tab(page, "Super-resolution")
    settled(page, "sr-input")
    page.locator("#sr-input input[type=file]").set_input_files(str(files / "big.png"))
    says(page, LARGE.format(MP026))
    shot = tb.screenshot(page, "upload-refused")
    assert Image.open(io.BytesIO(shot.read_bytes())).size[0] == VIEWPORT["width"]
