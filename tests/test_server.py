"""End to end: the real server (`python webui.py`), all four endpoints through gradio_client."""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ldm_core.provenance import read_parameters

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_catalog, tmp_path_factory):
    port = free_port()
    out = tmp_path_factory.mktemp("server-out")
    log = open(out / "server.log", "w")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "webui.py"), "--models", str(tiny_catalog), "--port",
                             str(port), "--output-dir", str(out), "--auth", "alice:secret"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except Exception:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("server did not start:\n" + (out / "server.log").read_text()[-3000:])
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


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
    assert params["/text2img"] == ["prompt", "negative_prompt", *sampling]
    assert params["/layout2img"] == ["prompt", "boxes", "negative_prompt", *sampling]
    assert params["/superres"] == ["image", "steps", "seed", "model"]
    assert params["/inpaint"] == ["image", "mask", "prompt", "negative_prompt", *sampling]
    for name, ps in api.items():  # every parameter but the inputs (prompt / image, and inpaint's mask) has a default
        required = 2 if name == "/inpaint" else 1
        assert all(p["parameter_has_default"] for p in ps["parameters"][required:]), name


def _check_png(path, task):
    p = read_parameters(path)
    assert Path(path).suffix == ".png" and p["task"] == task
    return p


def test_all_four_endpoints(client, tmp_path):
    from gradio_client import handle_file
    images, info = client.predict(prompt="a red circle", seed=42, num_images=2, api_name="/text2img")
    assert len(images) == 2 and json.loads(info)["seeds"] == [42, 43]
    assert [_check_png(i["image"], "text2img")["seed"] for i in images] == [42, 43]

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


def test_same_seed_reproduces_over_the_api(client):
    a, _ = client.predict(prompt="a blue square", seed=7, api_name="/text2img")
    b, _ = client.predict(prompt="a blue square", seed=7, api_name="/text2img")
    assert np.array_equal(np.asarray(Image.open(a[0]["image"])), np.asarray(Image.open(b[0]["image"])))


@pytest.mark.parametrize("kwargs,message", [
    (dict(prompt="a", steps=1000, api_name="/text2img"), "steps must be between"),
    (dict(prompt="a", model="../../etc/passwd", api_name="/text2img"), "unknown model"),
    (dict(prompt="", boxes="[{", api_name="/layout2img"), "not valid JSON"),
    (dict(prompt="", boxes='[{"label": "a", "box": [0, 0, 2, 1]}]', api_name="/layout2img"), r"\[0, 1\]"),
])
def test_bad_requests_get_clear_errors_and_the_server_goes_on(client, kwargs, message):
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError, match=message):
        client.predict(**kwargs)
    assert client.predict(prompt="a red circle", api_name="/text2img")[0]


def test_not_an_image_is_a_clear_error(client, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    (tmp_path / "x.png").write_bytes(b"this is not a png")
    with pytest.raises(AppError, match="not an image"):
        client.predict(image=handle_file(str(tmp_path / "x.png")), api_name="/superres")
