"""Every zoo entry of the catalog from its offline mirror (the real download's layout, shrunk
widths, random weights) through the CLI and the HTTP API, at its native size and at an awkward one,
each with its task's inputs (a prompt, an image, image and mask, OpenImages boxes, a label map); the
ones whose tab takes text or nothing (unconditional, class, text) also through the browser; and the
hub's CompVis/ldm-celebahq-256 beside them.

    download (file:// mirror) -> safe read -> convert once -> load -> run
"""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from servers import webui

from ldm_core import zoo
from ldm_core.__main__ import main
from ldm_core.provenance import read_parameters
from ldm_core.tasks import TASKS
from ldm_core.zoo import ZOO
from ldm_core.zoo.mirror import write_configs, write_mirror

ROOT = Path(__file__).resolve().parent.parent
LDMS = [n for n, m in ZOO.items() if m.kind == "ldm"]
HUB = "ldm-celebahq-256"
CLASS = {"cin256": "goldfish", "cin256-v2": "tabby cat"}
REAL_CONFIGS = zoo.CONFIGS       # the vendored real configs (a fixture points zoo.CONFIGS at shrunk ones)
PROMPT = "a lighthouse on a cliff at dusk"
# layout2img-openimages256: OpenImages class names (ldm_core/pipelines/openimages_classes.txt)
BOXES = json.dumps([{"label": "Car", "box": [0.05, 0.5, 0.5, 0.95]}, {"label": "Tree", "box": [0.55, 0.05, 0.95, 0.9]}])
SUPERRES_NATIVE = 256            # bsr_sr: 64² low-resolution inputs to 256² (its config: image_size 64, f=4)
BROWSER = {"unconditional": ("uncond", "Unconditional"), "class2img": ("c2i", "Class → Image"),
           "text2img": ("t2i", "Text → Image")}     # the tabs this file drives: (element prefix, tab title)


def _toml(entry: dict) -> str:
    return "[[model]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in entry.items()) + "\n"


@pytest.fixture(scope="module")
def zoo_env(tmp_path_factory, tiny_catalog, hub_mirrors):
    """The mirrors served from a file:// folder, an empty zoo folder, and a catalog: the tiny models
    plus the real catalog's zoo entries and ldm-celebahq-256, as models/catalog.toml has them."""
    root = tmp_path_factory.mktemp("zoo")
    write_mirror(root / "mirror", LDMS, seed=1)
    mp = pytest.MonkeyPatch()
    mp.setattr(zoo, "CONFIGS", write_configs(root / "configs", LDMS))     # the mirror's widths
    env = {"LDM_ZOO_URL": f"file://{root / 'mirror'}/", "LDM_ZOO_DIR": str(root / "converted")}
    for k, v in env.items():
        mp.setenv(k, v)
    real = tomllib.loads((ROOT / "models" / "catalog.toml").read_text())["model"]
    ours = [e for e in real if e["source"].startswith("zoo:") or e["name"] == HUB]
    assert sorted(e["source"][4:] for e in ours if e["source"].startswith("zoo:")) == sorted(LDMS)
    catalog = root / "catalog.toml"
    catalog.write_text(tiny_catalog.read_text() + "".join(_toml(e) for e in ours))
    catalog.write_text(f'root = "{tiny_catalog.parent}"\n' + catalog.read_text())
    yield catalog, env, {e["name"]: e for e in ours}
    mp.undo()


def sizes(name: str, entry: dict) -> list[tuple[int, int]]:
    """The model's native output size, and an awkward one: wider and shorter by the smallest step its
    autoencoder and UNet take (a multiple of f x 2^(levels - 1))."""
    if name == HUB:
        return [(256, 256), (96, 160)]
    folder = zoo.converted(name)
    unet = json.loads((folder / "unet" / "config.json").read_text())
    vae = json.loads((folder / "vae" / "config.json").read_text())
    step = 2 ** (len(vae["block_out_channels"]) - 1) * 2 ** (len(unet["block_out_channels"]) - 1)
    w = entry.get("width", SUPERRES_NATIVE)
    return [(w, entry.get("height", SUPERRES_NATIVE)), (w + step, w - step)]


def scene(w: int, h: int) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([x * 255 // w, y * 255 // h, (x * y) % 256], -1).astype(np.uint8))


def label_map(w: int, h: int) -> Image.Image:
    """Greyscale COCO-Stuff class ids (the semantic models' 182): sky above, sea, then sand."""
    ids = np.full((h, w), 156, np.uint8)                           # sky-other
    ids[h // 2:], ids[3 * h // 4:] = 154, 153                      # sea, sand
    return Image.fromarray(ids, mode="L")


def task_inputs(name: str, task: str, w: int, h: int, folder: Path) -> dict:
    """The request fields a model's task needs for a w x h output (images saved under `folder`, as paths)."""
    files = {}
    if task == "superres":          # 4x: the low-resolution input is a quarter of the output
        files["image"] = scene(w // 4, h // 4)
    elif task == "inpaint":
        mask = Image.new("L", (w, h), 0)
        mask.paste(255, (w // 4, h // 4, w // 2, h // 2))
        files.update(image=scene(w, h), mask=mask)
    elif task == "semantic2img":
        files["label_map"] = label_map(w, h)
    given = {"text2img": {"prompt": PROMPT}, "layout2img": {"boxes": BOXES}}.get(task, {})
    if name in CLASS:
        given["class_name"] = CLASS[name]
    for field, img in files.items():
        given[field] = folder / f"{name}-{field}-{w}x{h}.png"
        img.save(given[field])
    if "width" in TASKS[task].api:     # not super-resolution: its output is 4x its input
        given.update(width=w, height=h)
    return given


def cli_args(name: str, task: str, w: int, h: int, folder: Path) -> list[str]:
    given = task_inputs(name, task, w, h, folder)
    positional = [str(given.pop(f)) for f in TASKS[task].positional if f in given]
    return [task, *positional, *(a for k, v in given.items() for a in ("--" + k.replace("_", "-"), str(v)))]


@pytest.fixture(scope="module")
def converted(zoo_env, tmp_path_factory):
    """`python -m ldm_core download <name>` for every zoo entry: from the mirror, converted once."""
    catalog, _, entries = zoo_env
    for name in LDMS:
        assert main(["--models", str(catalog), "download", name]) == 0
        assert zoo.converted(name) and zoo.source_info(name)["sha256"]
    assert main(["--models", str(catalog), "download", "celeba256"]) == 0     # again: nothing fetched
    return entries


def test_cli_runs_every_zoo_entry_at_native_and_awkward_sizes(zoo_env, converted, tmp_path, capsys):
    catalog, _, entries = zoo_env
    for name, entry in entries.items():
        for w, h in sizes(name, entry):
            args = ["--models", str(catalog), "--device", "cpu", "--outdir", str(tmp_path / "out"),
                    *cli_args(name, entry["task"], w, h, tmp_path), "--model", name, "--steps", "2", "--seed", "3"]
            assert main(args) == 0, capsys.readouterr().err
            path = [p for p in capsys.readouterr().out.split() if p.endswith(".png")][-1]
            params = read_parameters(path)
            assert params["model"] == name and params["size"] == f"{w}x{h}" and Image.open(path).size == (w, h), \
                (name, params["size"], (w, h))
            if name in CLASS:
                assert CLASS[name] in params["class_name"]
            if entry["task"] == "layout2img":
                assert [b["label"] for b in params["boxes"]] == ["Car", "Tree"]
            if entry["task"] == "semantic2img":
                assert params["label_map_size"] == [w, h] and params["eta"] == entry["eta"]


def test_api_runs_every_zoo_entry(zoo_env, converted, tmp_path):
    from gradio_client import Client, handle_file
    catalog, env, entries = zoo_env
    with webui(catalog, tmp_path / "out", "--offline", env=env) as server:
        client = Client(server.url, verbose=False)
        for name, entry in entries.items():
            for w, h in sizes(name, entry):
                # guidance and eta left unset: the model's own (cin256, inpainting_big, layout: no guidance, 1)
                kwargs = {k: handle_file(str(v)) if isinstance(v, Path) else v
                          for k, v in task_inputs(name, entry["task"], w, h, tmp_path).items()}
                if entry["task"] == "text2img":   # its endpoint's defaults are fixed (docs/api.md), not the model's
                    kwargs["guidance_scale"] = entry["guidance"]
                images, info = client.predict(**kwargs, model=name, steps=2, seed=1, api_name=f"/{entry['task']}")
                info, image = json.loads(info), images if isinstance(images, str) else images[0]["image"]
                assert info["model"] == name and Image.open(image).size == (w, h), (name, w, h)   # superres: one path
                if entry["task"] in ("unconditional", "class2img", "semantic2img"):   # DDIM eta: the model's own
                    assert info["eta"] == entry.get("eta", 0.0), name
                assert info.get("guidance_scale") in (None, entry.get("guidance")), name


def test_the_ui_runs_every_zoo_entry_with_the_mouse(zoo_env, converted, tmp_path):
    test_browser = pytest.importorskip("test_browser")        # skips without chromium
    catalog, env, entries = zoo_env
    with webui(catalog, tmp_path / "out", "--offline", env=env) as server, \
            test_browser.sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(test_browser.CHROMIUM), args=test_browser.CHROME_ARGS)
        page = browser.new_page(viewport=test_browser.VIEWPORT)
        page.set_default_timeout(test_browser.UI_MS)
        page.goto(server.url, wait_until="domcontentloaded", timeout=60_000)
        page.wait_for_selector("#t2i-prompt textarea", timeout=60_000)
        done, driven = 0, {n: e for n, e in entries.items() if e["task"] in BROWSER}
        for name, entry in driven.items():
            prefix, title = BROWSER[entry["task"]]
            page.get_by_role("tab", name=title).click()
            panel = page.locator(f"#{entry['task']}-model")
            panel.locator("input").click()
            page.keyboard.press("Control+A")           # the shown choice's text goes, the typed name filters
            page.keyboard.type(name)
            panel.locator(f"[data-testid=dropdown-option][aria-label^='{name} ']").click()
            if name in CLASS:           # the list follows the model: ImageNet's 1000 names
                page.wait_for_function("() => document.querySelector('#c2i-classes').innerText"
                                       ".includes('1000 classes')", timeout=test_browser.UI_MS)
                page.locator("#c2i-classes input").click()
                page.keyboard.type(CLASS[name])
                page.locator("#c2i-classes [data-testid=dropdown-option]").first.click()
                page.keyboard.press("Escape")
            if entry["task"] == "text2img":
                page.locator("#t2i-prompt textarea").fill(PROMPT)
            steps = page.locator(f"#{entry['task']}-steps input[type=number]")
            steps.click(click_count=3)
            page.keyboard.type("2")
            page.keyboard.press("Enter")
            page.click(f"#{prefix}-generate")
            done += 1
            page.wait_for_function(f"(m) => document.querySelector('#{prefix}-info').innerText"
                                   f".includes('\"model\": \"' + m + '\"')", arg=name,
                                   timeout=test_browser.GENERATION_MS)
            assert not page.locator("[data-testid=toast-body].error").count(), test_browser.toasts(page)
        test_browser.screenshot(page, "zoo-class2img")
        browser.close()
    made = {read_parameters(p)["model"] for p in (tmp_path / "out").glob("**/*.png")}
    assert made == set(driven) and done == len(driven) and {"txt2img-large", "cin256", "celeba256"} <= set(driven)


def test_the_zoo_first_stages_download_and_serve_the_compression_view(tmp_path, monkeypatch, service):
    """kl-f8 and vq-f4 from their mirrors through `download`, then listed and run by the Perceptual
    compression view: latent shapes f and c as the real configs say (widths shrunk, random weights)."""
    names = ["kl-f8", "vq-f4"]
    monkeypatch.setattr(zoo, "CONFIGS", REAL_CONFIGS)          # the mirror is built from the real configs
    write_mirror(tmp_path / "mirror", names, seed=2)
    monkeypatch.setattr(zoo, "CONFIGS", write_configs(tmp_path / "configs", names))
    monkeypatch.setenv("LDM_ZOO_URL", f"file://{tmp_path / 'mirror'}/")
    monkeypatch.setenv("LDM_ZOO_DIR", str(tmp_path / "converted"))
    listed = {a.name: a for a in service.autoencoders()}
    assert not listed["zoo:kl-f8"].ready and "download kl-f8" in listed["zoo:kl-f8"].how
    for name in names:
        assert main(["download", name]) == 0
    image = Image.new("RGB", (64, 48), (200, 40, 40))
    runs = {r.autoencoder.name: r for r in service.compress(image, ["zoo:kl-f8", "zoo:vq-f4"])}
    assert runs["zoo:kl-f8"].latent_shape == (4, 6, 8) and runs["zoo:vq-f4"].latent_shape == (3, 12, 16)
    assert all(r.image.size == (64, 48) and not r.error and r.psnr is not None for r in runs.values())
