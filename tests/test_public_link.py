"""A studio on a public link, attacked the way an attacker would: raw HTTP to Gradio's own routes
(not gradio_client to the studio's endpoints). The server believes it is public: requests carry
`Host: studio.example`, which is what Gradio's CORS code looks at."""
import io
import json
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from servers import webui

HOST = "studio.example"
EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def studio(tiny_catalog, tmp_path_factory):
    with webui(tiny_catalog, tmp_path_factory.mktemp("public") / "out", "--max-seconds", "20") as s:
        yield s


@pytest.fixture(scope="module")
def locked(tiny_catalog, tmp_path_factory):
    with webui(tiny_catalog, tmp_path_factory.mktemp("locked") / "out", "--auth", "alice:secret") as s:
        yield s


def http(studio, method, path, **kw):
    headers = {"Host": HOST, **kw.pop("headers", {})}
    return httpx.request(method, studio.url + path.lstrip("/"), headers=headers, timeout=60, **kw)


def png(w, h, mode="RGBA") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (w, h)).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def upload(studio, data: bytes, name="x.png") -> dict:
    r = http(studio, "POST", "gradio_api/upload", files=[("files", (name, data, "image/png"))])
    assert r.status_code == 200, r.text
    return {"path": r.json()[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def dependency(studio, button_elem_id: str) -> tuple[int, int, list[int]]:
    """(fn_index, trigger id, input ids) of the click of the button with this elem_id."""
    cfg = http(studio, "GET", "config").json()
    button = next(c["id"] for c in cfg["components"] if c.get("props", {}).get("elem_id") == button_elem_id)
    dep = next(d for d in cfg["dependencies"] if [button, "click"] in d["targets"])
    return dep["id"], button, dep["inputs"]


def join(studio, fn: int, trigger: int, data: list, session: str, **kw) -> httpx.Response:
    return http(studio, "POST", "gradio_api/queue/join", json={"data": data, "fn_index": fn, "trigger_id": trigger,
                                                              "session_hash": session, "event_data": None}, **kw)


# the parameters endpoints gained since these attacks were written, at their defaults: over raw HTTP every
# parameter is sent in order (gradio_client fills defaults itself; docs/api.md)
GAINED = {"text2img": [False, ""], "layout2img": [False, ""], "inpaint": [2.0, 0, 0, 0, 0]}


def full(api: str, data: list) -> list:
    return [*data, *GAINED.get(api, [])]


def call(studio, api: str, data: list) -> str:
    """POST /gradio_api/call/<api> with `data` (and the gained parameters' defaults), then read its event
    stream to the end; the stream's text."""
    r = http(studio, "POST", f"gradio_api/call/{api}", json={"data": full(api, data)})
    assert r.status_code == 200, r.text
    event = r.json()["event_id"]
    return http(studio, "GET", f"gradio_api/call/{api}/{event}").text


T2I = ["a red circle", "", 2, 3.0, 1, 1, 32, 32, "DDIM", "tiny-text2img"]


# ------------------------------------------------------------------ 1, 2: memory bombs through Gradio's routes
def test_an_editor_layer_bomb_is_refused_before_decoding(studio):
    fn, trigger, inputs = dependency(studio, "inpaint-generate")
    big = upload(studio, png(2896, 2896))                       # 8.4 MP in a few tens of kB
    small = upload(studio, png(64, 64))
    rest = ["a", "", 1, 3.0, 1, 1, "DDIM", "tiny-inpaint", True, "max", 2.0, 0, 0, 0, 0]
    assert len(inputs) == 1 + len(rest)
    before = studio.rss_kb()
    r = join(studio, fn, trigger, [{"background": small, "layers": [small] * 50, "composite": small, "id": None},
                                   *rest], "bomb1")
    assert r.status_code == 400 and "at most 2 are accepted" in r.text
    r = join(studio, fn, trigger, [{"background": big, "layers": [big], "composite": big, "id": None}, *rest],
             "bomb2")
    assert r.status_code == 400 and "too many pixels; the limit is 1048576" in r.text
    assert studio.rss_kb() - before < 60_000                     # not 33 MB a layer
    ok = join(studio, fn, trigger, [{"background": small, "layers": [small], "composite": small, "id": None},
                                    *rest], "fine")
    assert ok.status_code == 200                                 # a normal edit still goes through


def test_the_blob_route_cannot_allocate_without_bound(studio):
    cfg = http(studio, "GET", "config").json()
    editor = next(c["id"] for c in cfg["components"] if c.get("props", {}).get("elem_id") == "inpaint-editor")
    before = studio.rss_kb()
    for index in ("50000000", "3"):
        r = http(studio, "POST", "gradio_api/component_server",
                 data={"component_id": str(editor), "session_hash": "s", "fn_name": "accept_blobs", "type": "layer",
                       "index": index, "id": "x"}, files=[("blob", ("b.png", png(8, 8), "image/png"))])
        assert r.status_code >= 400
    for i in range(100):    # pending piecewise uploads stay bounded in number
        http(studio, "POST", "gradio_api/component_server",
             data={"component_id": str(editor), "session_hash": "s", "fn_name": "accept_blobs", "type": "layer",
                   "index": "0", "id": f"id{i}"}, files=[("blob", ("b.png", png(512, 512), "image/png"))])
    assert studio.rss_kb() - before < 60_000                     # not 380 MB for one request


def raw_status(studio, head: bytes) -> int:
    """Send a bare HTTP request head (an announced body that never comes); the status code."""
    import socket
    from urllib.parse import urlsplit
    u = urlsplit(studio.url)
    with socket.create_connection((u.hostname, u.port), timeout=30) as s:
        s.sendall(head)
        return int(s.recv(4096).split(b" ", 2)[1])


def test_uploads_are_capped_at_the_readme_figure(studio):
    r = http(studio, "POST", "gradio_api/upload", files=[("files", ("big.bin", b"\0" * 20_500_000, "image/png"))])
    assert r.status_code == 413 and "20" in r.text
    head = (f"POST /gradio_api/upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            f"Content-Length: 300000000\r\n\r\n").encode()
    assert raw_status(studio, head) == 413                       # refused from its header, nothing read
    ok = upload(studio, png(64, 64))                             # a normal upload still works
    assert ok["path"]


# ------------------------------------------------------------------ 3: compute budget, time limit, abandoned jobs
def test_a_request_over_the_compute_budget_is_refused_with_the_budget_named(studio):
    text = call(studio, "text2img", ["a", "", 150, 3.0, 1, 8, 256, 256, "DDIM", "tiny-text2img"])
    assert "event: error" in text and "78.6 megapixel-steps" in text and "budget is 64" in text


def test_abandoned_calls_are_cancelled_and_others_are_served(studio):
    """Jobs whose results nobody reads stop; a client holds at most 3 jobs; the next request runs."""
    heavy = ["a", "", 150, 3.0, 1, 1, 512, 512, "DDIM", "tiny-text2img"]   # in budget, seconds long
    codes = [http(studio, "POST", "gradio_api/call/text2img", json={"data": full("text2img", heavy)}).status_code
             for _ in range(4)]
    assert codes[:3] == [200, 200, 200] and codes[3] == 400             # the fourth: over the client's quota
    t0 = time.time()
    deadline = t0 + 90
    while "a client stopped reading its updates" not in studio.log():
        assert time.time() < deadline, studio.log()[-2000:]
        time.sleep(0.5)
    text = call(studio, "text2img", T2I)                                 # served, not stuck behind them
    assert "event: complete" in text, text[-500:]


def test_a_generation_past_the_time_limit_stops_with_a_message(tiny_catalog, tmp_path):
    with webui(tiny_catalog, tmp_path / "out", "--max-seconds", "0.5") as s:
        text = call(s, "text2img", ["a", "", 150, 3.0, 1, 8, 128, 128, "DDIM", "tiny-text2img"])
        assert "event: error" in text and "this server allows 0.5 s per generation" in text
        assert "event: complete" in call(s, "text2img", ["a", "", 1, 3.0, 1, 1, 32, 32, "DDIM", "tiny-text2img"])


# ------------------------------------------------------------------ 4: CORS and headers
def test_foreign_origins_get_no_credentialed_cors_anywhere(studio):
    pre = http(studio, "OPTIONS", "gradio_api/queue/join",
               headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 403 and "access-control-allow-origin" not in pre.headers
    post = http(studio, "POST", "gradio_api/call/text2img", json={"data": full("text2img", T2I)},
                headers={"Origin": EVIL})
    assert post.status_code == 403 and "access-control-allow-origin" not in post.headers
    get = http(studio, "GET", "config", headers={"Origin": EVIL})
    assert not any(k.startswith("access-control-") for k in get.headers)
    null = http(studio, "POST", "gradio_api/call/text2img", json={"data": full("text2img", T2I)},
                headers={"Origin": "null"})
    assert null.status_code == 403
    own = http(studio, "POST", "gradio_api/call/text2img", json={"data": full("text2img", T2I)}, headers={"Origin": f"http://{HOST}"})
    assert own.status_code == 200                               # the page's own origin works


def test_security_headers_on_every_page(studio):
    for path in ("", "config", "gradio_api/info"):
        h = http(studio, "GET", path).headers
        assert h["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'self'" in h["content-security-policy"] and h["x-frame-options"] == "SAMEORIGIN"


# ------------------------------------------------------------------ 6, 7: with --auth
def test_nothing_about_the_api_before_login(locked):
    page = http(locked, "GET", "").text
    assert '"auth_required":true' in page and "named_endpoints" not in page and "tiny-text2img" not in page
    assert http(locked, "GET", "openapi.json").status_code == 404
    assert http(locked, "GET", "gradio_api/info").status_code == 401


def test_failed_logins_are_throttled_with_a_growing_delay(locked):
    times = []
    for _ in range(6):
        t0 = time.perf_counter()
        r = http(locked, "POST", "login", data={"username": "alice", "password": "nope"})
        times.append(time.perf_counter() - t0)
        assert r.status_code == 400
    assert max(times[:3]) < 0.5 and times[3] >= 0.9 and times[4] >= 1.9 and times[5] >= 3.9
    t0 = time.perf_counter()
    ok = http(locked, "POST", "login", data={"username": "alice", "password": "secret"})
    assert ok.status_code == 200 and time.perf_counter() - t0 >= 7.9       # the right one waits its turn too
    r = http(locked, "POST", "login", data={"username": "alice", "password": "nope"})
    assert r.elapsed.total_seconds() < 0.5                                 # and resets the count


# ------------------------------------------------------------------ 8: every bad input has a clear answer
def test_a_lone_surrogate_gets_a_clear_error(studio):
    body = json.dumps({"data": full("text2img", ["a \ud800 b", *T2I[1:]])})   # JSON escapes it; Python decodes it
    r = http(studio, "POST", "gradio_api/call/text2img", content=body, headers={"Content-Type": "application/json"})
    text = http(studio, "GET", f"gradio_api/call/text2img/{r.json()['event_id']}").text
    assert "event: error" in text and "not valid Unicode" in text, text[-400:]


def test_bad_boxes_and_images_get_clear_errors(studio):
    deep = "[" * 10_000 + "]" * 10_000
    lay = ["", deep, "", 2, 3.0, 1, 1, 32, 32, "DDIM", "tiny-layout2img"]
    assert "nested too deeply" in call(studio, "layout2img", lay)
    digits = json.dumps([{"label": "red circle", "box": [0.1, 0.1, 0.5, 0.5]}]).replace("0.5", "1" * 5000, 1)
    lay[1] = digits
    assert "a number too long" in call(studio, "layout2img", lay)
    arr = (np.random.default_rng(0).random((1500, 2000, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")                        # 3 MP: more than the studio's 1 MP for inpainting
    image = upload(studio, buf.getvalue())
    mask = upload(studio, png(64, 64, "L"))
    text = call(studio, "inpaint", [image, mask, "a", "", 1, 3.0, 1, 1, 64, 64, "DDIM", "tiny-inpaint", True, "max"])
    assert "too many pixels" in text or "the limit is 1048576" in text, text[-400:]
    junk = http(studio, "POST", "gradio_api/call/superres", json={"data": ["notafile", 2, 1, "tiny-superres", 0, 0]})
    assert junk.status_code == 400 and "FileData" in junk.json()["detail"]   # Gradio's own check, a message


def test_the_cache_janitor_bounds_age_and_size(tmp_path):
    import os

    from server.security import clean_cache
    now = time.time()
    for i, (age_h, size) in enumerate([(30, 10), (2, 400), (1, 400), (0, 400)]):
        f = tmp_path / f"d{i}" / "f.png"
        f.parent.mkdir()
        f.write_bytes(b"x" * size)
        os.utime(f, (now - age_h * 3600, now - age_h * 3600))
    removed, freed = clean_cache(tmp_path, max_age_s=24 * 3600, max_bytes=900)
    assert (removed, freed) == (2, 410)                          # the day-old one, then the oldest while over
    assert sorted(p.parent.name for p in tmp_path.rglob("*.png")) == ["d2", "d3"]


def test_user_errors_log_one_line_not_a_traceback(studio):
    """An operator must see real faults: a user's bad input is one 'refused:' line in the log."""
    before = studio.log().count("Traceback")
    call(studio, "text2img", ["", *T2I[1:]])                                        # empty prompt
    call(studio, "text2img", ["a", "", 150, 3.0, 1, 8, 256, 256, "DDIM", "tiny-text2img"])   # over budget
    call(studio, "layout2img", ["", "[" * 100 + "]" * 100, "", 2, 3.0, 1, 1, 32, 32, "DDIM", "tiny-layout2img"])
    deadline = time.time() + 10
    while studio.log().count("refused:") < 3 and time.time() < deadline:
        time.sleep(0.2)
    log = studio.log()
    assert log.count("Traceback") == before, log[-3000:]
    assert "refused: the prompt is empty" in log and "refused: this request asks for" in log
