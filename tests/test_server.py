"""End to end: the real server (`python webui.py`), all four endpoints through gradio_client."""
import io
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from servers import webui

from ldm_core.provenance import read_parameters, read_watermark

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def studio(tiny_catalog, tmp_path_factory):
    with webui(tiny_catalog, tmp_path_factory.mktemp("server") / "out", "--auth", "alice:secret") as s:
        yield s


@pytest.fixture(scope="module")
def server(studio):
    return studio.url


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client
    return Client(server, auth=("alice", "secret"), verbose=False)


def test_auth_is_required(server):
    from gradio_client import Client
    with pytest.raises(Exception):
        Client(server, auth=("alice", "wrong"), verbose=False)


def test_api_names_and_parameters_match_the_spec(client):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    params = {k: [p["parameter_name"] for p in v["parameters"]] for k, v in api.items()}
    sampling = ["steps", "guidance_scale", "seed", "num_images", "width", "height", "sampler", "model"]
    sp = "speedups"     # every endpoint's last: the speed-ups it runs with ("": the model's own)
    assert params["/text2img"] == ["prompt", "negative_prompt", *sampling, "hires", "hires_model", sp, "regions",
                                   "plan_layout"]
    assert params["/layout2img"] == ["prompt", "boxes", "negative_prompt", *sampling, "hires", "hires_model", sp]
    # the spec's names first; then keyword parameters the spec allows endpoints to gain, each with a default
    assert params["/superres"] == ["image", "steps", "seed", "model", "back_projection", "average", sp]
    assert params["/inpaint"] == ["image", "mask", "prompt", "negative_prompt", *sampling, "keep_unmasked",
                                  "mask_downsampling", "mask_blur", "extend_left", "extend_top", "extend_right",
                                  "extend_bottom", sp]
    assert params["/img2img"] == ["image", "prompt", "strength", "negative_prompt", *sampling, sp]
    assert params["/unconditional"] == ["num_images", "steps", "seed", "sampler", "eta", "width", "height", "model",
                                        sp]
    assert params["/class2img"] == ["class_name", *sampling, "eta", sp]
    for name, ps in api.items():  # every parameter but the inputs (prompt / image, and inpaint's mask) has a default
        required = {"/inpaint": 2, "/unconditional": 0}.get(name, 1)
        assert all(p["parameter_has_default"] for p in ps["parameters"][required:]), name


def _check_png(path, task):
    p = read_parameters(path)
    assert Path(path).suffix == ".png" and p["task"] == task
    return p


def test_every_endpoint(client, tmp_path):
    from gradio_client import handle_file
    images, info = client.predict(prompt="a red circle", seed=42, num_images=2, api_name="/text2img")
    assert len(images) == 2 and json.loads(info)["seeds"] == [42, 43]
    assert json.loads(info)["speedups"] == "none"           # the tiny model's own: none
    _, info = client.predict(prompt="a red circle", seed=42, speedups="deepcache", api_name="/text2img")
    assert json.loads(info)["speedups"] == "deepcache (interval 3, branch 0)"
    assert [_check_png(i["image"], "text2img")["seed"] for i in images] == [42, 43]

    images, info = client.predict(prompt="a red circle", hires=True, api_name="/text2img")        # then 4x
    assert _check_png(images[0]["image"], "text2img")["hires"]["size"] == "128x128"

    images, info = client.predict(prompt="", boxes='[{"label": "red circle", "box": [0.1, 0.1, 0.5, 0.5]}]',
                                  api_name="/layout2img")
    assert _check_png(images[0]["image"], "layout2img")["boxes"][0]["label"] == "red circle"

    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(tmp_path / "low.png")
    image, info = client.predict(image=handle_file(str(tmp_path / "low.png")), api_name="/superres")
    assert Image.open(image).size == (64, 64) and _check_png(image, "superres")

    Image.new("RGB", (32, 32), (0, 0, 255)).save(tmp_path / "img.png")
    m = Image.new("L", (32, 32), 0)
    m.paste(255, (8, 8, 24, 24))
    m.save(tmp_path / "mask.png")
    images, info = client.predict(image=handle_file(str(tmp_path / "img.png")),
                                  mask=handle_file(str(tmp_path / "mask.png")), prompt="a red circle",
                                  api_name="/inpaint")
    assert _check_png(images[0]["image"], "inpaint")["prompt"] == "a red circle"

    images, info = client.predict(image=handle_file(str(tmp_path / "img.png")), mask=None, extend_right=16,
                                  prompt="a red circle", api_name="/inpaint")          # outpainting
    assert Image.open(images[0]["image"]).size == (48, 32) and json.loads(info)["extend_right"] == 16

    Image.new("RGB", (40, 24), (0, 200, 0)).save(tmp_path / "wide.png")
    images, info = client.predict(image=handle_file(str(tmp_path / "wide.png")), prompt="a red circle",
                                  strength=0.5, seed=3, api_name="/img2img")
    p = _check_png(images[0]["image"], "img2img")
    assert p["strength"] == 0.5 and p["size"] == "40x24" and Image.open(images[0]["image"]).size == (40, 24)

    images, info = client.predict(num_images=2, seed=5, sampler="DDIM", eta=1.0, width=48, height=40,
                                  api_name="/unconditional")
    assert [_check_png(i["image"], "unconditional")["seed"] for i in images] == [5, 6]
    assert json.loads(info)["eta"] == 1.0 and Image.open(images[0]["image"]).size == (48, 40)

    images, info = client.predict(class_name="red circle; 7", num_images=3, seed=1, api_name="/class2img")
    assert json.loads(info)["class_name"] == "red circle; yellow diamond"     # index 7: colours x shapes
    assert [_check_png(i["image"], "class2img")["class_name"] for i in images] == [
        "red circle", "yellow diamond", "red circle"]     # one class per image, cycling


def test_same_seed_reproduces_over_the_api(client):
    a, _ = client.predict(prompt="a blue square", seed=7, api_name="/text2img")
    b, _ = client.predict(prompt="a blue square", seed=7, api_name="/text2img")
    assert np.array_equal(np.asarray(Image.open(a[0]["image"])), np.asarray(Image.open(b[0]["image"])))


# ---------------------------------------------------------------- every bad input, through the real server
def _encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    b = io.BytesIO()
    img.save(b, format=fmt)
    return b.getvalue()


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_catalog):
    """The inputs of the table below, by name (`@name` in a row)."""
    d = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    png = _encode(noise)
    data = {
        "image.png": png,
        "mask.png": _encode(mask),
        "small.png": _encode(noise.resize((16, 16))),
        "not-an-image.png": b"this is not a png, whatever its name says",
        "truncated.png": png[: len(png) // 2],
        "16-bit.png": _encode(Image.fromarray(rng.integers(0, 65535, (32, 32)).astype(np.uint16))),
        "cmyk.jpg": _encode(noise.convert("CMYK"), "JPEG"),
        "palette.png": _encode(noise.convert("P")),
        "rgba.png": _encode(noise.convert("RGBA")),
        "bomb.png": _encode(Image.new("1", (20_000, 20_000))),      # 400 Mpixel in a small file
        "large.png": _encode(Image.new("RGB", (1024, 1024))),        # over the super-resolution input limit
        "mask-64.png": _encode(mask.resize((64, 64))),
        "mask-black.png": _encode(Image.new("L", (32, 32), 0)),
        "mask-white.png": _encode(Image.new("L", (32, 32), 255)),
    }
    assert len(data["bomb.png"]) < 2_000_000 and Image.open(io.BytesIO(data["16-bit.png"])).mode.startswith("I")
    assert Image.open(io.BytesIO(data["cmyk.jpg"])).mode == "CMYK"
    out = {}
    for name, b in data.items():
        (d / name).write_bytes(b)
        out[name] = str(d / name)
    out["model-folder"] = str(tiny_catalog.parent / "tiny-text2img")
    return out


BOX = '{"label": "red circle", "box": [0.1, 0.1, 0.5, 0.5]}'
OK = None  # documented handling: the request succeeds
T2I, LAY, SR, INP, I2I = "/text2img", "/layout2img", "/superres", "/inpaint", "/img2img"
INPUTS = [  # (what, endpoint, parameters; "@name" is a file of `files`, expected error (regex) or OK)
    ("empty prompt", T2I, dict(prompt=""), "prompt is empty"),
    ("blank prompt", T2I, dict(prompt=" \n\t "), "prompt is empty"),
    ("10,000-character prompt", T2I, dict(prompt="a" * 10_000), "prompt is 10000 characters long; the limit is 1000"),
    ("10,000-character negative prompt", T2I, dict(prompt="a", negative_prompt="b" * 10_000),
     "negative_prompt is 10000 characters long"),
    ("malformed boxes JSON", LAY, dict(prompt="", boxes="[{"), "boxes is not valid JSON"),
    ("boxes not a list", LAY, dict(prompt="", boxes='{"label": "x"}'), "boxes must be a JSON list"),
    ("box without coordinates", LAY, dict(prompt="", boxes='[{"label": "x"}]'), '"label" and "box"'),
    ("box outside [0, 1]", LAY, dict(prompt="", boxes='[{"label": "a", "box": [0, 0, 2, 1]}]'),
     r"coordinates must lie in \[0, 1\]"),
    ("box with a negative coordinate", LAY, dict(prompt="", boxes='[{"label": "a", "box": [-0.1, 0, 0.5, 0.5]}]'),
     r"coordinates must lie in \[0, 1\]"),
    ("zero-area box", LAY, dict(prompt="", boxes='[{"label": "a", "box": [0.5, 0.1, 0.5, 0.6]}]'),
     "zero or negative area"),
    ("too many boxes", LAY, dict(prompt="", boxes="[" + ",".join([BOX] * 9) + "]"), "9 boxes given; at most 8"),
    ("no box and no caption", LAY, dict(prompt="", boxes="[]"), "give at least one box"),
    ("unknown model", T2I, dict(prompt="a", model="no-such-model"), "unknown model"),
    ("model name that is a path", T2I, dict(prompt="a", model="../../etc/passwd"), "unknown model"),
    ("model name that is a model folder", T2I, dict(prompt="a", model="@model-folder"), "unknown model"),
    ("model name that is a hub id", T2I, dict(prompt="a", model="hub:CompVis/ldm-text2im-large-256"), "unknown model"),
    ("model of another task", T2I, dict(prompt="a", model="tiny-superres"), "unknown model"),
    ("steps 0", T2I, dict(prompt="a", steps=0), "steps must be between 1 and 500, got 0"),
    ("steps 1000", T2I, dict(prompt="a", steps=1000), "steps must be between 1 and 500, got 1000"),
    ("guidance -1", T2I, dict(prompt="a", guidance_scale=-1), "guidance_scale must be between 0.0 and 30.0"),
    ("guidance 100", T2I, dict(prompt="a", guidance_scale=100), "guidance_scale must be between 0.0 and 30.0"),
    ("batch 0", T2I, dict(prompt="a", num_images=0), "num_images must be between 1 and 8, got 0"),
    ("batch 100", T2I, dict(prompt="a", num_images=100), "num_images must be between 1 and 8, got 100"),
    ("width 16", T2I, dict(prompt="a", width=16), "width must be between 32 and 1024, got 16"),
    ("height 100,000", T2I, dict(prompt="a", height=100_000), "height must be between 32 and 1024"),
    ("width not a multiple of 8", T2I, dict(prompt="a", width=60), "width must be a multiple of 8"),
    ("layout size out of range", LAY, dict(prompt="", boxes=f"[{BOX}]", width=4096), "width must be between"),
    ("seed 2**40", T2I, dict(prompt="a", seed=2 ** 40), "seed must be between"),
    ("unknown sampler", T2I, dict(prompt="a", sampler="PLMS++"), "unknown sampler"),
    ("not an image", SR, dict(image="@not-an-image.png"), "image is not an image PIL can read"),
    ("truncated PNG", SR, dict(image="@truncated.png"), "image is truncated or corrupt"),
    ("decompression bomb", SR, dict(image="@bomb.png"), "image has too many pixels|image is 20000x20000"),
    ("image over the pixel limit", SR, dict(image="@large.png"), "1024x1024 = 1048576 pixels; the limit is 262144"),
    ("super-resolution steps 0", SR, dict(image="@small.png", steps=0), "steps must be between"),
    ("unknown super-resolution model", SR, dict(image="@small.png", model="/etc/passwd"), "unknown model"),
    ("16-bit PNG", SR, dict(image="@16-bit.png"), OK),
    ("CMYK JPEG", SR, dict(image="@cmyk.jpg"), OK),
    ("palette PNG", SR, dict(image="@palette.png"), OK),
    ("RGBA PNG", SR, dict(image="@rgba.png"), OK),
    ("inpaint: image not an image", INP, dict(image="@not-an-image.png", mask="@mask.png"),
     "image is not an image PIL can read"),
    ("inpaint: mask not an image", INP, dict(image="@image.png", mask="@not-an-image.png"),
     "mask is not an image PIL can read"),
    ("inpaint: truncated mask", INP, dict(image="@image.png", mask="@truncated.png"), "mask is truncated or corrupt"),
    ("inpaint: decompression bomb image", INP, dict(image="@bomb.png", mask="@mask.png"),
     "image has too many pixels|image is 20000x20000"),
    ("inpaint: decompression bomb mask", INP, dict(image="@image.png", mask="@bomb.png"),
     "mask has too many pixels|mask is 20000x20000"),
    ("inpaint: all-black mask", INP, dict(image="@image.png", mask="@mask-black.png"), "the mask is empty"),
    ("inpaint: all-white mask", INP, dict(image="@image.png", mask="@mask-white.png"), OK),
    ("inpaint: mask of another size", INP, dict(image="@image.png", mask="@mask-64.png"), OK),
    ("inpaint: CMYK image", INP, dict(image="@cmyk.jpg", mask="@mask.png"), OK),
    ("inpaint: RGBA image, palette mask", INP, dict(image="@rgba.png", mask="@palette.png"), OK),
    ("inpaint: 16-bit image", INP, dict(image="@16-bit.png", mask="@mask.png"), OK),
    ("img2img: strength above 1", I2I, dict(image="@image.png", strength=1.5), "strength must be between 0"),
    ("img2img: image not an image", I2I, dict(image="@not-an-image.png"), "image is not an image"),
    ("img2img: decompression bomb", I2I, dict(image="@bomb.png"), "image has too many pixels|image is 20000x20000"),
    ("img2img: CMYK image", I2I, dict(image="@cmyk.jpg", prompt="a red circle"), OK),
]


def _resolve(kwargs: dict, files: dict) -> dict:
    from gradio_client import handle_file
    out = {}
    for k, v in kwargs.items():
        if isinstance(v, str) and v.startswith("@"):
            v = files[v[1:]]
            v = handle_file(v) if k in ("image", "mask") else v
        out[k] = v
    return out


@pytest.mark.parametrize("what,api,kwargs,expected", INPUTS, ids=[row[0] for row in INPUTS])
def test_every_bad_input_gets_a_clear_answer_and_the_server_goes_on(client, files, what, api, kwargs, expected):
    from gradio_client.exceptions import AppError
    if expected is OK:
        result = client.predict(**_resolve(kwargs, files), api_name=api)
        paths = [result[0]] if api == SR else [i["image"] for i in result[0]]
        for p in paths:
            assert read_parameters(p)["task"] == api.strip("/") and read_watermark(p).found
    else:
        with pytest.raises(AppError) as e:
            client.predict(**_resolve(kwargs, files), api_name=api)
        message = str(e.value)
        assert re.search(expected, message), message
        assert "Traceback" not in message and 'File "' not in message
    assert client.predict(prompt="a red circle", steps=1, api_name="/text2img")[0]  # and the next one is served


# ---------------------------------------------------------------- outputs, uploads and file routes
def test_outputs_are_fresh_watermarked_pngs_never_the_upload(client, files):
    from gradio_client import handle_file
    image, _ = client.predict(image=handle_file(files["small.png"]), api_name="/superres")
    assert Path(image).read_bytes() != Path(files["small.png"]).read_bytes()
    assert Image.open(image).size == (64, 64) and read_parameters(image)["task"] == "superres"
    assert read_watermark(image).found
    images, _ = client.predict(image=handle_file(files["image.png"]), mask=handle_file(files["mask.png"]),
                               api_name="/inpaint")
    assert Path(images[0]["image"]).read_bytes() != Path(files["image.png"]).read_bytes()
    assert read_watermark(images[0]["image"]).found


def _login(url: str) -> str:
    import httpx
    r = httpx.post(url + "login", data={"username": "alice", "password": "secret"})
    assert r.status_code == 200
    return "; ".join(f"{k}={v}" for k, v in r.cookies.items())


def _raw_get(url: str, path: str, cookie: str | None) -> tuple[int, bytes, dict]:
    """GET `path` exactly as written (no client-side normalisation of ../ or %2F)."""
    import http.client
    from urllib.parse import urlsplit
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
    r = conn.getresponse()
    body, headers = r.read(), {k.lower(): v for k, v in r.getheaders()}
    conn.close()
    return r.status, body, headers


def test_file_routes_refuse_traversal(studio, client, tiny_catalog):
    client.predict(prompt="a red circle", api_name="/text2img")
    cookie = _login(studio.url)
    own = sorted(studio.out.rglob("*.png"))[0]             # a result: its owner gets a copy, the folder is not served
    assert _raw_get(studio.url, f"/gradio_api/file={own}", cookie)[0] in (403, 404)
    assert _raw_get(studio.url, f"/gradio_api/file={own}", None)[0] == 401    # nothing at all before login
    weights = next((tiny_catalog.parent / "tiny-text2img" / "unet").glob("*.safetensors"))
    for path in ["/file=/etc/passwd", "/file=../../etc/passwd", "/file=..%2F..%2Fetc%2Fpasswd",
                 "/gradio_api/file=/etc/passwd", "/gradio_api/file=%2Fetc%2Fpasswd",
                 "/gradio_api/file=../../../../../../etc/passwd",
                 "/gradio_api/file=..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
                 "/gradio_api/file=%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                 "/gradio_api/file=%252e%252e%252f%252e%252e%252fetc%252fpasswd",
                 f"/gradio_api/file={studio.out}/../../../../../../etc/passwd",
                 f"/gradio_api/file={studio.out}/..%2F{studio.log_path.name}",
                 f"/gradio_api/file={studio.log_path}",
                 f"/gradio_api/file={ROOT / 'webui.py'}", f"/gradio_api/file={weights}",
                 "/gradio_api/file=/proc/self/environ", "/gradio_api/file=/etc/passwd%00.png",
                 "/gradio_api/file=file:///etc/passwd", "/gradio_api/file=//etc/passwd",
                 "/gradio_api/file=C:\\Windows\\win.ini"]:
        status, body, _ = _raw_get(studio.url, path, cookie)
        assert status in (400, 403, 404), (path, status)
        assert len(body) < 500 and b"root:x" not in body, path   # an error message, never the file


def test_uploads_are_never_served_as_pages(studio):
    """An uploaded file goes back (to a logged-in user) only as a download, never rendered."""
    import httpx
    cookie = _login(studio.url)
    r = httpx.post(studio.url + "gradio_api/upload", headers={"Cookie": cookie},
                   files={"files": ("evil.html", b"<script>alert(1)</script>", "text/html")})
    path = r.json()[0]
    status, _, headers = _raw_get(studio.url, f"/gradio_api/file={path}", cookie)
    assert status == 200 and "html" not in headers["content-type"]
    assert headers["content-disposition"].startswith("attachment")
    assert _raw_get(studio.url, f"/gradio_api/file={path}", None)[0] == 401


# ---------------------------------------------------------------- cancel
def test_cancel_stops_the_generation_at_its_next_update_and_the_server_goes_on(client, studio):
    from ldm_core.jobs import FIRST_UPDATE_SECONDS, UPDATE_SECONDS
    submitted = time.time()
    job = client.submit(prompt="a long one", steps=150, width=512, height=512, seed=3, api_name="/text2img")
    deadline = time.time() + 120
    while len(job.outputs()) < 2:       # updates come after the first second, then every UPDATE_SECONDS
        assert time.time() < deadline and not job.done()
        time.sleep(0.02)
    assert job.cancel()
    cancelled = time.time()
    images, _ = client.predict(prompt="a red circle", steps=1, api_name="/text2img")   # served next
    assert images
    match = re.search(r"(\d\d:\d\d:\d\d,\d+) \S+: generation cancelled after step (\d+) of 150", studio.log())
    assert match, studio.log()[-2000:]
    assert int(match.group(2)) < 150
    h, m, rest = match.group(1).split(":")
    logged = time.localtime(cancelled)
    at = int(h) * 3600 + int(m) * 60 + float(rest.replace(",", "."))
    lag = at - (logged.tm_hour * 3600 + logged.tm_min * 60 + logged.tm_sec + cancelled % 1)
    # Gradio stops a generator at its next update, which comes after the step in flight: on a busy
    # machine a 512² step can take a second, so the bound allows two steps (at the pace this job ran)
    per_step = (cancelled - submitted) / max(1, int(match.group(2)))
    assert lag < UPDATE_SECONDS + 2 * per_step + 1.0, (match.group(0), lag, per_step)
    assert lag < 0.25 * 150 * per_step                   # nowhere near running the 150 steps out
    assert FIRST_UPDATE_SECONDS <= 1.0


def test_auth_from_flags_files_and_the_environment(tmp_path):
    import webui
    (tmp_path / "users").write_text("# users\nbob:pw2\n\ncarol:a:b\n")
    assert webui.parse_auth(["alice:pw1", str(tmp_path / "users"), "dave:x\neve:y"]) == [
        ("alice", "pw1"), ("bob", "pw2"), ("carol", "a:b"), ("dave", "x"), ("eve", "y")]
    assert webui.parse_auth([]) is None
    with pytest.raises(SystemExit, match="line 1") as e:
        webui.parse_auth(["secretwithoutuser"])
    assert "secretwithoutuser" not in str(e.value)


def test_the_queue_polls_less_often_than_gradios_default():
    """calm_queue sets attributes of Gradio's pinned Queue: they must still exist and still be read."""
    import inspect

    import gradio as gr
    from gradio.queueing import Queue

    from server.fair_use import QUEUE_POLL_SECONDS, calm_queue
    source = inspect.getsource(Queue)
    assert "self.sleep_when_free" in source and "self.progress_update_sleep_when_free" in source
    with gr.Blocks() as demo:
        gr.Button()
    q = calm_queue(demo.queue())._queue
    assert q.sleep_when_free == QUEUE_POLL_SECONDS and q.progress_update_sleep_when_free > 0.01
