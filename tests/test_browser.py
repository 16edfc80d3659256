"""Real-browser end-to-end test: every tab driven by a human-like Playwright session.

Starts `webui.py` on tiny random-weight models (ldm_core.testing.write_tiny_catalog), drives
Debian's chromium (/usr/bin/chromium; `playwright install` is not used) through each tab,
and writes one screenshot per tab to docs/screenshots/ for the README.

    apt-get install -y chromium
    OMP_NUM_THREADS=1 python -m pytest tests/test_browser.py -x -q
"""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
# README screenshots are refreshed with LDM_SCREENSHOTS=1; otherwise they go to a temp folder
SHOTS = ROOT / "docs" / "screenshots" if os.environ.get("LDM_SCREENSHOTS") == "1" else Path(
    tempfile.gettempdir()) / "ldm-screenshots"
VIEWPORT = {"width": 1280, "height": 900}
CHROME_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync"]
STARTUP_S = 90        # server start: imports + tiny models
GENERATION_MS = 60_000  # one generation on tiny models (well under a second when idle)
UI_MS = 15_000        # an ordinary UI reaction (upload preview, modal, tab switch)
SHOT_MAX_BYTES = 300_000

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium); the CI script installs it",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    """A running studio on tiny models: yields (url, output_dir); the server never outlives the module."""
    from ldm_core.testing import write_tiny_catalog

    tmp = tmp_path_factory.mktemp("studio")
    # LDM_BROWSER_CATALOG=models/catalog.toml runs the same flows on the built-in models (README screenshots)
    catalog = os.environ.get("LDM_BROWSER_CATALOG") or write_tiny_catalog(tmp / "models")
    out = tmp / "outputs"
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
           "PYTHONUNBUFFERED": "1"}
    log_path = tmp / "server.log"
    url = f"http://127.0.0.1:{port}/"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "webui.py", "--models", str(catalog), "--port", str(port),
                                 "--output-dir", str(out), "--offline"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"webui.py exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"webui.py did not answer within {STARTUP_S}s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, out
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROME_ARGS, timeout=60_000)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser, studio):
    url, _ = studio
    ctx = browser.new_context(viewport=VIEWPORT)
    ctx.set_default_timeout(UI_MS)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(url, wait_until="domcontentloaded", timeout=60_000)
    pg.wait_for_selector("#t2i-prompt textarea", timeout=60_000)
    yield pg
    ctx.close()
    assert not errors, f"uncaught page errors: {errors}"


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def wait_gallery(page, elem_id: str) -> None:
    """Wait for the first result image, failing fast (with its message) if an error toast comes instead."""
    page.locator(f"#{elem_id} img, [data-testid=toast-body].error").first.wait_for(state="visible",
                                                                                 timeout=GENERATION_MS)
    assert page.locator("[data-testid=toast-body].error").count() == 0, toasts(page)
    assert page.locator(f"#{elem_id} img").count() >= 1


def assert_shown_whole(page, elem_id: str) -> None:
    """The result image is inside its panel's visible box: nothing of it cropped."""
    img = page.locator(f"#{elem_id} img").first
    box, panel = img.bounding_box(), page.locator(f"#{elem_id}").bounding_box()
    shown = page.evaluate("""(e) => { const r = e.getBoundingClientRect(); let p = e.parentElement;
        while (p) { const q = p.getBoundingClientRect(); const s = getComputedStyle(p);
          if (s.overflow !== 'visible' && (q.top > r.top + 1 || q.bottom < r.bottom - 1)) return false;
          p = p.parentElement; } return true; }""", img.element_handle())
    assert shown, f"#{elem_id}: the image is clipped by a scrolling parent"
    assert box["y"] >= panel["y"] - 1 and box["y"] + box["height"] <= panel["y"] + panel["height"] + 1, (box, panel)


def toasts(page) -> list[str]:
    return page.locator("[data-testid=toast-text]").all_inner_texts()


def screenshot(page, name: str) -> Path:
    """Whole page at 1280 wide, quantised to 256 colours to keep the README light."""
    page.wait_for_timeout(400)  # let the gallery image fade in
    raw = page.screenshot(full_page=True, animations="disabled")
    img = Image.open(io.BytesIO(raw)).convert("RGB")
    img = img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    img.save(path, "PNG", optimize=True)
    assert path.stat().st_size < SHOT_MAX_BYTES, f"{path} is {path.stat().st_size} bytes"
    return path


def generate_text2img(page, prompt: str = "a red circle left of a blue square") -> None:
    open_tab(page, "Text → Image")
    page.fill("#t2i-prompt textarea", prompt)
    page.click("#t2i-generate")
    wait_gallery(page, "t2i-gallery")


# --- one test per tab ---------------------------------------------------------------------

def test_text2img_empty_prompt_shows_error_toast(page):
    page.click("#t2i-generate")
    toast = page.locator("[data-testid=toast-body].error")
    toast.first.wait_for(state="visible", timeout=GENERATION_MS)
    text = " ".join(toasts(page))
    assert "prompt is empty" in text
    assert "Traceback" not in text and "File \"" not in text
    assert page.locator("#t2i-gallery img").count() == 0


def test_text2img(page, studio):
    generate_text2img(page)
    assert list(studio[1].glob("**/text2img-*.png"))
    assert_shown_whole(page, "t2i-gallery")
    screenshot(page, "text2img")


def test_layout2img(page, studio):
    open_tab(page, "Layout → Image")
    canvas = page.locator("#layout-canvas canvas").first
    canvas.wait_for(state="visible")
    canvas.scroll_into_view_if_needed()
    bb = canvas.bounding_box()
    x0, y0 = bb["x"] + bb["width"] * 0.2, bb["y"] + bb["height"] * 0.25
    page.mouse.move(x0, y0)
    page.mouse.down()
    for i in range(1, 11):  # drag in steps, as a hand would
        page.mouse.move(x0 + bb["width"] * 0.04 * i, y0 + bb["height"] * 0.035 * i)
    page.mouse.up()

    modal = page.locator("#model-box-edit")  # the annotator's label dialog
    modal.wait_for(state="visible")
    label = modal.locator("input[aria-label=Label]")
    label.fill("red circle")
    label.press("Enter")
    if modal.is_visible():
        modal.get_by_role("button", name="OK").click()
    modal.wait_for(state="hidden")
    # the box reaches the server: the normalised-boxes panel shows it
    page.wait_for_function(
        "() => [...document.querySelectorAll('.cm-content')].some(e => e.innerText.includes('red circle'))",
        timeout=UI_MS)

    page.fill("#layout-prompt textarea, #layout-prompt input", "a red circle")
    page.click("#layout-generate")
    wait_gallery(page, "layout-gallery")
    assert list(studio[1].glob("**/layout2img-*.png"))
    screenshot(page, "layout2img")


def test_send_to_superres_without_clicking_a_result(page, studio):
    """Send to super-resolution right after generating (nothing clicked): the first result goes."""
    generate_text2img(page, "a green square")
    page.click("#t2i-send-superres")
    page.locator("#sr-input img").first.wait_for(state="visible", timeout=UI_MS)
    assert page.get_by_role("tab", name="Super-resolution").get_attribute("aria-selected") == "true"


def start_long_generation(page) -> None:
    """100 steps at 512x512, typed in with the keyboard; returns once its live preview shows (running)."""
    page.fill("#t2i-prompt textarea", "a red circle")
    for control, value in (("steps", "100"), ("width", "512"), ("height", "512")):
        box = page.locator(f"#text2img-{control} input[type=number]")
        box.click(click_count=3)
        page.keyboard.type(value)
        page.keyboard.press("Enter")
    page.click("#t2i-generate")
    page.locator("#t2i-preview img").first.wait_for(state="visible", timeout=GENERATION_MS)


def test_stop_says_so_and_keeps_the_interrupted_image(page):
    open_tab(page, "Text → Image")
    start_long_generation(page)
    page.click("#t2i-stop")
    page.get_by_text("Stopped after 0 of 1 image").first.wait_for(state="visible", timeout=GENERATION_MS)
    page.wait_for_function("() => !document.querySelector('#t2i-preview img')", timeout=UI_MS)
    page.locator("#t2i-gallery img").first.wait_for(state="visible", timeout=UI_MS)   # the interrupted image, kept
    assert "interrupted at" in page.locator("#t2i-gallery").inner_text()


def test_phone_width_results_come_right_under_generate(browser, studio):
    """At 390 px the columns stack; the results come before the settings, not 1,000 px below."""
    ctx = browser.new_context(viewport={"width": 390, "height": 844})
    ctx.set_default_timeout(UI_MS)
    try:
        pg = ctx.new_page()
        pg.goto(studio[0], wait_until="domcontentloaded", timeout=60_000)
        pg.wait_for_selector("#t2i-prompt textarea", timeout=60_000)
        generate_text2img(pg, "a yellow triangle")
        image, button = pg.locator("#t2i-gallery img").first, pg.locator("#t2i-generate")
        below = image.bounding_box()["y"] - button.bounding_box()["y"]
        assert 0 < below < 450, f"the first result is {below:.0f} px below Generate"
        assert pg.locator("#text2img-steps").bounding_box()["y"] > pg.locator("#t2i-gallery").bounding_box()["y"]
        for name in ("Text → Image", "Layout → Image", "Super-resolution", "Inpainting", "Image → Image", "History",
                     "PNG info"):                   # every tab in sight, none behind a "more" menu
            tab = pg.get_by_role("tab", name=name)
            assert tab.is_visible(), name
            box = tab.bounding_box()
            assert 0 <= box["x"] and box["x"] + box["width"] <= 390, name
        screenshot(pg, "phone-text2img")
    finally:
        ctx.close()


def test_output_galleries_are_not_upload_boxes(page):
    open_tab(page, "Text → Image")
    gallery = page.locator("#t2i-gallery")
    gallery.wait_for(state="visible")
    assert "Drop" not in gallery.inner_text() and gallery.locator("input[type=file]").count() == 0


def test_superres(page, studio, tmp_path):
    src = tmp_path / "low.png"
    from ldm_core.data.shapes import sample_scene  # a held-out scene, downscaled 4x
    Image.fromarray(sample_scene(41_000_007).image).resize((16, 16), Image.BICUBIC).save(src)
    open_tab(page, "Super-resolution")
    page.locator("#sr-input input[type=file]").set_input_files(str(src))
    page.locator("#sr-input img").first.wait_for(state="visible")
    page.click("#sr-generate")
    wait_gallery(page, "sr-gallery")
    assert list(studio[1].glob("**/superres-*.png"))
    assert_shown_whole(page, "sr-gallery")
    screenshot(page, "superres")


def test_superres_advanced_switches_reach_the_result(page, studio, tmp_path):
    """The switches that make the studio's output diffusers' (docs/hub-models.md) are in the tab's
    Advanced settings: opened with the mouse, typed in, and reported in the result's parameters."""
    src = tmp_path / "low.png"
    Image.new("RGB", (16, 16), (200, 40, 40)).save(src)
    open_tab(page, "Super-resolution")
    page.locator("#sr-input input[type=file]").set_input_files(str(src))
    page.locator("#sr-input img").first.wait_for(state="visible")
    page.get_by_text("Advanced", exact=True).first.click()
    box = page.locator("#sr-back-projection input[type=number]")
    box.wait_for(state="visible")
    box.click(click_count=3)
    page.keyboard.type("0")
    page.keyboard.press("Enter")
    page.click("#sr-generate")
    page.wait_for_function("() => document.querySelector('#sr-info').innerText.includes('back_projection')",
                           timeout=UI_MS)
    text = page.locator("#sr-info").inner_text()
    assert '"back_projection": 0' in text, text


def upload_to_editor(page, path):
    """Upload `path` as the inpainting editor's background; returns the editor once the image is on
    its canvas (the editor zooms to fit then)."""
    editor = page.locator("#inpaint-editor")
    editor.wait_for(state="visible")
    zoom = editor.locator(".zoom-number")
    zoom_before = zoom.inner_text().strip()
    editor.locator("input[type=file]").first.set_input_files(str(path))
    page.wait_for_function("([e, z]) => e.innerText.trim() !== z", arg=[zoom.element_handle(), zoom_before],
                           timeout=UI_MS)
    return editor


def test_inpaint(page, studio, tmp_path):
    from ldm_core.data.shapes import sample_scene  # a held-out scene; the stroke crosses its middle
    scene = sample_scene(42_000_003)
    src = tmp_path / "scene.png"
    Image.fromarray(scene.image).save(src)
    open_tab(page, "Inpainting")
    editor = upload_to_editor(page, src)
    canvas = editor.locator("canvas").first
    bb = canvas.bounding_box()
    cx, cy = bb["x"] + bb["width"] / 2, bb["y"] + bb["height"] / 2
    before = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("L"), dtype=np.float32)
    page.mouse.move(cx - 80, cy - 20)
    page.mouse.down()
    for i in range(1, 7):  # a brush stroke across the middle (few moves: every one re-renders WebGL in software)
        page.mouse.move(cx - 80 + 27 * i, cy - 20 + 8 * i)
    page.mouse.up()
    page.wait_for_timeout(300)
    after = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("L"), dtype=np.float32)
    darker = (before - after) > 40          # the stroke can be seen where it was painted (it was white once)
    assert darker.sum() > 500, f"the painted stroke is not visible ({darker.sum()} pixels darkened)"
    page.fill("#inpaint-prompt textarea, #inpaint-prompt input", scene.caption)
    page.click("#inpaint-generate")
    wait_gallery(page, "inpaint-gallery")
    assert list(studio[1].glob("**/inpaint-*.png"))
    assert_shown_whole(page, "inpaint-gallery")
    screenshot(page, "inpaint")


def test_pnginfo(page, studio):
    out = studio[1]
    pngs = sorted(out.glob("**/text2img-*.png"))
    if not pngs:  # run on its own (-k pnginfo): make one first
        generate_text2img(page)
        pngs = sorted(out.glob("**/text2img-*.png"))
    open_tab(page, "PNG info")
    page.locator("#pnginfo-file input[type=file]").set_input_files(str(pngs[0]))
    summary = page.get_by_label("Parameters", exact=True)
    page.wait_for_function(
        "() => [...document.querySelectorAll('textarea')].some(t => t.value.includes('Task: text2img'))",
        timeout=UI_MS)
    text = summary.input_value()
    assert "Steps:" in text and "Model: " in text and "Seed:" in text
    screenshot(page, "pnginfo")


def test_pnginfo_sends_a_layout_back_with_its_colours(page, tmp_path):
    """A layout PNG without a caption: its summary starts with the parameters (no blank line), and
    its boxes come back to the layout canvas in their colours, not grey."""
    from ldm_core.provenance import save_png
    params = {"task": "layout2img", "prompt": "", "negative_prompt": "", "steps": 3, "sampler": "DDIM",
              "guidance_scale": 3.0, "seed": 5, "size": "64x64", "model": "tiny-layout2img",
              "boxes": [{"label": "red circle", "box": [0.1, 0.1, 0.6, 0.6]}]}
    path = save_png(Image.new("RGB", (64, 64), "white"), params, tmp_path)
    open_tab(page, "PNG info")
    page.locator("#pnginfo-file input[type=file]").set_input_files(str(path))
    page.wait_for_function(
        "() => [...document.querySelectorAll('textarea')].some(t => t.value.includes('Task: layout2img'))",
        timeout=UI_MS)
    assert page.get_by_label("Parameters", exact=True).input_value().startswith("Steps: 3")
    page.click("#pnginfo-send")
    canvas = page.locator("#layout-canvas canvas").first
    canvas.wait_for(state="visible")
    page.wait_for_timeout(500)
    rgb = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")).astype(int)
    red = (rgb[..., 0] > 180) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)
    assert red.sum() > 50, "the box is not drawn in its colour"


def test_img2img_from_a_text2img_result(page, studio):
    """Send a text->image result to image->image, set a strength with the slider, redraw."""
    generate_text2img(page, "a red circle left of a blue square")
    page.click("#t2i-send-img2img")
    page.locator("#i2i-input img").first.wait_for(state="visible", timeout=UI_MS)
    assert page.get_by_role("tab", name="Image → Image").get_attribute("aria-selected") == "true"
    page.fill("#i2i-prompt textarea", "a green triangle left of a blue square")
    box = page.locator("#i2i-strength input[type=number]")
    box.click(click_count=3)
    page.keyboard.type("0.6")
    page.keyboard.press("Enter")
    page.click("#i2i-generate")
    wait_gallery(page, "i2i-gallery")
    made = sorted(studio[1].glob("**/img2img-*.png"))
    assert made
    from ldm_core.provenance import read_parameters
    assert read_parameters(made[-1])["strength"] == 0.6
    screenshot(page, "img2img")


def test_outpainting_with_a_soft_seam(page, studio, tmp_path):
    """Upload, extend the canvas to the right with the mouse (no painting), inpaint: a wider image."""
    from ldm_core.data.shapes import sample_scene
    Image.fromarray(sample_scene(42_000_004).image).save(tmp_path / "scene.png")
    open_tab(page, "Inpainting")
    upload_to_editor(page, tmp_path / "scene.png")
    page.get_by_text("Outpainting: extend the canvas").click()
    box = page.locator("#inpaint-extend-right input[type=number]")
    box.click(click_count=3)
    page.keyboard.type("16")
    page.keyboard.press("Enter")
    blur = page.locator("#inpaint-mask-blur input[type=number]")
    blur.click(click_count=3)
    page.keyboard.type("4")
    page.keyboard.press("Enter")
    before = set(studio[1].glob("**/inpaint-*.png"))
    page.click("#inpaint-generate")
    wait_gallery(page, "inpaint-gallery")
    made = [p for p in studio[1].glob("**/inpaint-*.png") if p not in before]
    from ldm_core.provenance import read_parameters
    params = read_parameters(made[-1])
    assert Image.open(made[-1]).size[0] > Image.open(made[-1]).size[1]     # wider than tall: extended right
    assert params["extend_right"] > 0 and params["mask_blur"] == 4


def test_history_reuses_settings_and_sends_images_on(page, studio):
    """Generate (with hires), open History: the result is there, newest first; reuse its settings,
    then send its image to super-resolution, all with the mouse."""
    open_tab(page, "Text → Image")
    page.fill("#t2i-prompt textarea", "a yellow triangle")
    width = page.locator("#text2img-width input[type=number]").input_value()
    page.locator("#text2img-hires input[type=checkbox]").check()
    page.click("#t2i-generate")
    wait_gallery(page, "t2i-gallery")
    page.locator("#text2img-hires input[type=checkbox]").uncheck()
    page.fill("#t2i-prompt textarea", "something else")
    open_tab(page, "History")
    first = page.locator("#history-gallery .thumbnail-item, #history-gallery button.thumbnail-item").first
    first.wait_for(state="visible", timeout=UI_MS)
    first.click()
    page.wait_for_function("() => document.querySelector('#history-params').innerText.includes('yellow')",
                           timeout=UI_MS)
    assert "a yellow triangle" in page.locator("#history-params").inner_text()
    assert '"hires"' in page.locator("#history-params").inner_text()
    page.click("#history-reuse")
    page.wait_for_function("() => document.querySelector('#t2i-prompt textarea').value === 'a yellow triangle'",
                           timeout=UI_MS)
    assert page.locator("#text2img-hires input[type=checkbox]").is_checked()
    assert page.locator("#text2img-width input[type=number]").input_value() == width   # the first stage's size
    screenshot(page, "history-reused")
    open_tab(page, "History")
    page.locator("#history-gallery .thumbnail-item").first.click()
    page.click("#history-send-superres")
    page.locator("#sr-input img").first.wait_for(state="visible", timeout=UI_MS)
    open_tab(page, "History")
    screenshot(page, "history")


def test_xyplot_in_the_text2img_tab(page, studio):
    """Open the X/Y plot, choose steps against seed with the mouse and keyboard, plot: one labelled grid."""
    open_tab(page, "Text → Image")
    page.fill("#t2i-prompt textarea", "a blue square")
    page.get_by_text("X/Y plot: one parameter against another").click()
    page.locator("#xy-x-axis input").click()
    page.get_by_role("option", name="steps", exact=True).click()
    page.fill("#xy-x-values textarea, #xy-x-values input", "2, 4")
    page.fill("#xy-y-values textarea, #xy-y-values input", "1, 2")
    before = set(studio[1].glob("**/text2img-*.png"))
    page.click("#xy-plot")
    wait_gallery(page, "t2i-gallery")
    made = [p for p in studio[1].glob("**/text2img-*.png") if p not in before]
    from ldm_core.provenance import read_parameters
    plot = read_parameters(made[-1])["xyplot"]
    assert plot["x_axis"] == "steps" and plot["x_values"] == [2, 4] and plot["y_values"] == [1, 2]
    screenshot(page, "xyplot")


def test_a_waiting_request_shows_its_place_in_the_queue(browser, studio):
    """Two visitors: while the first one's long generation runs, the second one's waits and says where."""
    pages = []
    try:
        for _ in range(2):
            ctx = browser.new_context(viewport=VIEWPORT)
            ctx.set_default_timeout(UI_MS)
            pg = ctx.new_page()
            pg.goto(studio[0], wait_until="domcontentloaded", timeout=60_000)
            pg.wait_for_selector("#t2i-prompt textarea", timeout=60_000)
            pages.append((ctx, pg))
        first, second = pages[0][1], pages[1][1]
        start_long_generation(first)
        second.fill("#t2i-prompt textarea", "a blue square")
        second.click("#t2i-generate")
        second.get_by_text("queue: 1/1").first.wait_for(state="visible", timeout=UI_MS)
        screenshot(second, "queue")
        first.click("#t2i-stop")
        wait_gallery(second, "t2i-gallery")                  # then it runs
    finally:
        for ctx, _ in pages:
            ctx.close()


def test_class2img_picks_classes_with_the_mouse(page, studio):
    """Search the class list, click two classes, one image each; the PNGs say which class each is;
    History's "reuse" puts both classes back."""
    open_tab(page, "Class → Image")
    box = page.locator("#c2i-classes input").first
    box.click()
    page.keyboard.type("blue sq")
    page.locator("#c2i-classes [data-testid=dropdown-option][aria-label='blue square']").click()
    box.click()
    page.keyboard.type("green")
    page.locator("#c2i-classes [data-testid=dropdown-option][aria-label='green triangle']").click()
    page.keyboard.press("Escape")
    page.click("#c2i-generate")
    wait_gallery(page, "c2i-gallery")
    made = sorted(studio[1].glob("**/class2img-*.png"), key=lambda p: p.stat().st_mtime)[-3:]
    from ldm_core.provenance import read_parameters
    classes = [read_parameters(p)["class_name"] for p in made]
    assert {"blue square", "green triangle"} <= set(classes), classes
    screenshot(page, "class2img")
    page.click("#c2i-classes .token-remove[title='Remove 0']")   # unpick "red circle": reuse must set the picks
    open_tab(page, "History")
    page.locator("#history-gallery .thumbnail-item").first.click()
    page.wait_for_function("() => document.querySelector('#history-params').innerText.includes('class2img')",
                           timeout=UI_MS)
    import re
    own = re.search(r'"class_name": "([^"]+)"', page.locator("#history-params").inner_text()).group(1)
    assert own in ("red circle", "blue square", "green triangle")      # the image's own class, not the batch's
    page.click("#history-reuse")
    page.wait_for_function("(c) => [...document.querySelectorAll('#c2i-classes .token')].map(t => t.innerText.trim())"
                           ".join('|') === c", arg=own, timeout=UI_MS)
    assert page.get_by_role("tab", name="Class → Image").get_attribute("aria-selected") == "true"


def test_unconditional(page, studio):
    open_tab(page, "Unconditional")
    page.click("#uncond-generate")
    wait_gallery(page, "uncond-gallery")
    assert list(studio[1].glob("**/unconditional-*.png"))
    screenshot(page, "unconditional")
