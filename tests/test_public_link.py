"""A studio on a public link, attacked the way an attacker would: raw HTTP to Gradio's own routes
(not gradio_client to the studio's endpoints). The server believes it is public: requests carry
`Host: studio.example`, which is what Gradio's CORS code looks at."""
import asyncio
import io
import json
import re
import time
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from PIL import Image
from servers import webui

HOST = "studio.example"
EVIL = "https://evil.example"


@pytest.fixture(scope="module")
def studio(tiny_catalog, tmp_path_factory):
    with webui(tiny_catalog, tmp_path_factory.mktemp("public") / "out", "--max-seconds", "60") as s:
        yield s


@pytest.fixture(scope="module")
def locked(tiny_catalog, tmp_path_factory):
    with webui(tiny_catalog, tmp_path_factory.mktemp("locked") / "out", "--auth", "alice:secret") as s:
        yield s


@pytest.fixture(scope="module")
def proxied(tiny_catalog, tmp_path_factory):
    """Behind a reverse proxy on this machine (`--trusted-proxy 127.0.0.1`), with a password and monitoring."""
    with webui(tiny_catalog, tmp_path_factory.mktemp("proxied") / "out", "--auth", "alice:secret",
               "--trusted-proxy", "127.0.0.1", "--monitoring", "--max-seconds", "20") as s:
        yield s


def http(studio, method, path, **kw):
    headers = {"Host": HOST, **kw.pop("headers", {})}
    return httpx.request(method, studio.url + path.lstrip("/"), headers=headers, timeout=kw.pop("timeout", 60), **kw)


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
    while not dep["inputs"]:          # the click turns the tab's Stop active, then runs (tabs/common.wire)
        dep = next(d for d in cfg["dependencies"] if d.get("trigger_after") == dep["id"])
    return dep["id"], button, dep["inputs"]


def join(studio, fn: int, trigger: int, data: list, session: str, **kw) -> httpx.Response:
    return http(studio, "POST", "gradio_api/queue/join", json={"data": data, "fn_index": fn, "trigger_id": trigger,
                                                              "session_hash": session, "event_data": None}, **kw)


# the parameters endpoints gained since these attacks were written, at their defaults: over raw HTTP every
# parameter is sent in order (gradio_client fills defaults itself; docs/api.md)
GAINED = {"text2img": [False, ""], "layout2img": [False, ""], "inpaint": [2.0, 0, 0, 0, 0]}
LAST = {"xyplot": [], "text2img": ["", "[]", ""]}   # every task endpoint's last: `speedups` ("": the model's own);
# text2img's then `regions` ("[]": none) and `plan_layout` ("": the model's own)


def full(api: str, data: list) -> list:
    return [*data, *GAINED.get(api, []), *LAST.get(api, [""])]


def call(studio, api: str, data: list, **kw) -> str:
    """POST /gradio_api/call/<api> with `data` (and the gained parameters' defaults), then read its event
    stream to the end; the stream's text."""
    r = http(studio, "POST", f"gradio_api/call/{api}", json={"data": full(api, data)}, **kw)
    assert r.status_code == 200, r.text
    event = r.json()["event_id"]
    return http(studio, "GET", f"gradio_api/call/{api}/{event}", **kw).text


T2I = ["a red circle", "", 2, 3.0, 1, 1, 32, 32, "DDIM", "tiny-text2img"]


# ------------------------------------------------------------------ 1, 2: memory bombs through Gradio's routes
def test_an_editor_layer_bomb_is_refused_before_decoding(studio):
    fn, trigger, inputs = dependency(studio, "inpaint-generate")
    big = upload(studio, png(2896, 2896))                       # 8.4 MP in a few tens of kB
    small = upload(studio, png(64, 64))
    rest = ["a", "", 1, 3.0, 1, 1, "DDIM", "tiny-inpaint", [], True, "max", 2.0, 0, 0, 0, 0]   # [] speed-ups
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


_HEAVY: dict = {}


def heavy(studio, **kw) -> list:
    """Text->image parameters in budget that run for seconds: 512x512 with 150 steps, or as many as the
    server predicts it can run within its time limit (it refuses a request predicted to run past it)."""
    if studio.url not in _HEAVY:
        params = ["a", "", 150, 3.0, 1, 1, 512, 512, "DDIM", "tiny-text2img"]
        fit = re.search(r"at most (\d+) steps? fit", call(studio, "text2img", params, **kw))
        params[2] = max(1, int(fit.group(1))) if fit else 150
        _HEAVY[studio.url] = params
    return _HEAVY[studio.url]


def test_abandoned_calls_are_cancelled_and_others_are_served(studio):
    """Jobs whose results nobody reads stop; a client holds at most 3 jobs, whatever X-Forwarded-For it
    makes up (no proxy is trusted here); the next request runs."""
    codes = [http(studio, "POST", "gradio_api/call/text2img", json={"data": full("text2img", heavy(studio))},
                  headers={"X-Forwarded-For": f"198.51.100.{i}"}).status_code for i in range(4)]
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
    assert http(locked, "GET", "openapi.json").status_code in (401, 404)     # (none, and nothing before login)
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


def login(studio, **kw) -> dict:
    """The cookies of a login as alice."""
    r = http(studio, "POST", "login", data={"username": "alice", "password": "secret"}, **kw)
    assert r.status_code == 200, r.text
    return dict(r.cookies)


def timed_failures(studio, xffs: list[str]) -> list[float]:
    times = []
    for xff in xffs:
        t0 = time.perf_counter()
        r = http(studio, "POST", "login", data={"username": "alice", "password": "nope"},
                 headers={"X-Forwarded-For": xff})
        times.append(time.perf_counter() - t0)
        assert r.status_code == 400
    return times


def test_a_made_up_forwarded_for_does_not_escape_the_login_throttle(locked):
    """No proxy is trusted: every X-Forwarded-For a direct client sends is ignored, so four failures
    under four made-up addresses are four failures of one client (the fourth waits)."""
    login(locked)                                                          # a clean count
    times = timed_failures(locked, [f"198.51.100.{i}" for i in range(4)])
    assert max(times[:3]) < 0.9 and times[3] >= 0.9
    login(locked)                                                          # (waits its turn; resets)


def gradio_routes(service) -> list[tuple[str, str]]:
    """(method, path) of every route of the studio's Gradio app, built in this process as webui.py
    builds it (Gradio's App.create_app is what launch() serves)."""
    import webui
    from gradio.routes import App
    demo = webui.build_app(service)
    demo.queue()
    app = App.create_app(demo, app_kwargs={"docs_url": None, "redoc_url": None, "openapi_url": None})

    def walk(routes):
        for r in routes:
            if hasattr(r, "effective_candidates"):        # a router included with a prefix (/gradio_api)
                yield from walk(r.effective_candidates())
            else:
                yield from ((m, r.path) for m in sorted(r.methods or []))
    return sorted(set(walk(app.routes)))


API_DESCRIPTION = re.compile(r'named_endpoints|gradio_api_info\s*=\s*\{\s*[^}\s]|"dependencies"\s*:\s*\[\s*[^\]\s]'
                             r'|"success_rate"|process_time_percentiles|Monitoring URL')


def test_every_route_before_login_is_closed_but_the_login_page(locked, service):
    import gradio
    routes = gradio_routes(service)
    assert {("GET", "/gradio_api/runs"), ("GET", "/monitoring/summary"), ("GET", "/config"),
            ("POST", "/gradio_api/queue/join")} <= set(routes)             # the walk sees Gradio's routes
    opened = set()
    for method, template in routes:
        if method == "HEAD" or template.rstrip("/") == "/login":     # (a login is a try for the throttle)
            continue
        path = re.sub(r"\{[^}]*\}", "1", template)
        r = http(locked, method, path, timeout=15)
        text = r.text
        assert not API_DESCRIPTION.search(text), (method, path, text[:300])
        assert gradio.__version__ not in text and '"version"' not in text, (method, path)
        if r.status_code != 401:
            opened.add((method, template))
    # what the login page needs (its scripts, styles and fonts under /assets and /static answer 404
    # for a made-up name), and startup-events, which Gradio's launch() calls itself
    assert opened <= {("GET", "/"), ("GET", "/assets/{path:path}"), ("GET", "/static/{path:path}"),
                      ("GET", "/favicon.ico"), ("GET", "/theme.css"), ("GET", "/robots.txt"), ("GET", "/logout"),
                      ("GET", "/gradio_api/startup-events")}, opened
    for path in ("gradio_api/runs", "gradio_api/runs/", "monitoring", "monitoring/summary", "gradio_api/app_id",
                 "manifest.json", "gradio_api/run-history/records"):
        assert http(locked, "GET", path).status_code == 401, path
    page = http(locked, "GET", "")
    assert page.status_code == 200 and '"auth_required":true' in page.text
    assert "window.gradio_api_info = {};" in page.text and page.headers["content-length"] == str(len(page.content))


def test_monitoring_is_off_unless_asked_for(studio):
    for path in ("monitoring", "monitoring/summary", "monitoring/0123456789"):
        assert http(studio, "GET", path).status_code == 404, path
    assert "Monitoring URL" not in studio.log() and "monitoring/" not in studio.log()


def test_monitoring_without_a_password_needs_a_loopback_server(monkeypatch, tiny_catalog, tmp_path):
    import webui
    monkeypatch.delenv("LDM_AUTH", raising=False)
    monkeypatch.setattr(webui, "limit_malloc_arenas", lambda: None)
    for flags in (["--listen"], ["--host", "192.0.2.1"], ["--share"]):
        with pytest.raises(SystemExit, match="--monitoring without --auth"):
            webui.main([*flags, "--monitoring", "--models", str(tiny_catalog), "--output-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        webui.parse_args(["--trusted-proxy", "not-an-address"])
    args = webui.parse_args(["--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "::1"])
    assert [str(n) for n in args.trusted_proxy] == ["10.0.0.0/8", "::1/128"]


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
    junk = http(studio, "POST", "gradio_api/call/superres",
                json={"data": ["notafile", 2, 1, "tiny-superres", 0, 0, ""]})
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


# ------------------------------------------------------------------ issue 25, 4: whose address is the client's
@pytest.fixture
def trust(monkeypatch):
    """security.trust_proxies, undone after the test."""
    from server import security
    monkeypatch.setattr(security, "_trusted", security._trusted)
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "127.0.0.1")
    return security.trust_proxies


def scope(peer: str, xff: str | None = None, path: str = "/", host: str = HOST, cookie: str | None = None) -> dict:
    headers = [(b"host", host.encode())]
    headers += [(b"x-forwarded-for", xff.encode())] if xff is not None else []
    headers += [(b"cookie", cookie.encode())] if cookie is not None else []
    return {"type": "http", "method": "GET", "path": path, "headers": headers, "client": (peer, 50000)}


def test_client_address_trusts_no_proxy_unless_told(trust):
    import os

    from server.security import client_key
    trust([])
    assert os.environ["FORWARDED_ALLOW_IPS"] == ""            # uvicorn no longer rewrites the peer itself
    assert client_key(scope("127.0.0.1", "203.0.113.7")) == "127.0.0.1"      # loopback, no proxy configured
    assert client_key(scope("::1", "203.0.113.7")) == "::1"
    assert client_key(scope("198.51.100.2", "203.0.113.7")) == "198.51.100.2"
    assert client_key(scope("127.0.0.1")) == "127.0.0.1"
    trust(["127.0.0.1"])                                       # --trusted-proxy 127.0.0.1
    assert client_key(scope("127.0.0.1", "203.0.113.7")) == "203.0.113.7"
    assert client_key(scope("127.0.0.1")) == "127.0.0.1"                     # no header: the peer
    assert client_key(scope("127.0.0.2", "203.0.113.7")) == "127.0.0.2"      # another loopback address: not trusted
    assert client_key(scope("198.51.100.2", "203.0.113.7")) == "198.51.100.2"   # a direct client's header: ignored
    # the right-most hop that is not a trusted proxy: what the client put before it is a claim
    assert client_key(scope("127.0.0.1", "10.0.0.1, 127.0.0.1, 203.0.113.7")) == "203.0.113.7"
    assert client_key(scope("127.0.0.1", "203.0.113.7, 127.0.0.1")) == "203.0.113.7"
    assert client_key(scope("127.0.0.1", "127.0.0.1, 127.0.0.1")) == "127.0.0.1"   # all trusted: the left-most


def test_client_address_through_the_share_tunnel_and_a_space(trust):
    from server.security import client_key
    trust([], share=True)                                      # the tunnel's client connects from loopback
    assert client_key(scope("127.0.0.1", "6.6.6.6, 203.0.113.7")) == "203.0.113.7"
    assert client_key(scope("::1", "2001:db8::5")) == "2001:db8::5"
    assert client_key(scope("::ffff:127.0.0.1", "203.0.113.7:5123")) == "203.0.113.7"
    assert client_key(scope("198.51.100.2", "203.0.113.7")) == "198.51.100.2"   # not through the tunnel
    assert client_key(scope("10.1.2.3", "203.0.113.7")) == "10.1.2.3"
    trust([], space=True)                                      # a Space's front end: loopback and private networks
    for proxy in ("10.1.2.3", "172.16.0.9", "192.168.1.1", "fd00::1", "127.0.0.1"):
        assert client_key(scope(proxy, "6.6.6.6, 203.0.113.7, 10.0.0.4")) == "203.0.113.7", proxy
    assert client_key(scope("172.32.0.1", "203.0.113.7")) == "172.32.0.1"    # outside 172.16/12
    assert client_key(scope("203.0.113.9", "198.51.100.1")) == "203.0.113.9"
    trust(["198.51.100.0/24", "2001:db8::/32"])                # --trusted-proxy with networks
    assert client_key(scope("198.51.100.77", "203.0.113.7, 198.51.100.3")) == "203.0.113.7"
    assert client_key(scope("2001:db8::1", "[2001:db8:1::9]:443, 203.0.113.8")) == "203.0.113.8"
    assert client_key(scope("127.0.0.1", "203.0.113.7")) == "127.0.0.1"
    with pytest.raises(ValueError):
        trust(["a.proxy.example"])


def asgi(layer, s: dict) -> tuple[int, bytes]:
    """Run one request through `layer`; (status, body)."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)
    asyncio.run(layer(s, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def inner(s, receive, send):
    """Gradio, as far as the layer can tell: an HTML page with its API description, and its idea of the client."""
    page = b"<script>window.gradio_api_info = {\"named_endpoints\": {}};</script>" + s["client"][0].encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
    await send({"type": "http.response.body", "body": page})


def test_run_history_refuses_a_forged_localhost(trust):
    """Gradio 6.31's run-history routes lend the operator's saved HF token to a request for
    `localhost` (CVE-2026-134825, fixed in 6.32.0, which this machine's registry lacks)."""
    from server.security import SecurityLayer
    trust(["127.0.0.1"])
    layer = SecurityLayer(inner)
    for path in ("/gradio_api/runs", "/gradio_api/runs/", "/gradio_api/run-history/records",
                 "/gradio_api/run-history/records/a/b/assets/c"):
        for host in ("localhost", "localhost:7860", "127.0.0.1:7860", "[::1]:7860"):
            assert asgi(layer, scope("203.0.113.5", path=path, host=host))[0] == 403, (path, host)
            assert asgi(layer, scope("127.0.0.1", "203.0.113.5", path=path, host=host))[0] == 403, (path, host)
            assert asgi(layer, scope("127.0.0.1", path=path, host=host))[0] == 200     # this machine's browser
        assert asgi(layer, scope("203.0.113.5", path=path))[0] == 200                  # its own name: Gradio decides
    status, body = asgi(layer, scope("127.0.0.1", "203.0.113.5", path="/"))
    assert body.endswith(b"203.0.113.5")                       # Gradio's request.client is the client, too


def test_the_layer_admits_only_a_valid_login_session(trust):
    from server.security import SecurityLayer
    trust([])
    layer = SecurityLayer(inner, password=True, gradio_app=SimpleNamespace(cookie_id="c1", tokens={"t0k": "alice"}))
    assert asgi(layer, scope("127.0.0.1", path="/config"))[0] == 401
    assert asgi(layer, scope("127.0.0.1", path="/config", cookie="access-token-c1=wrong"))[0] == 401
    assert asgi(layer, scope("127.0.0.1", path="/config", cookie="access-token-c2=t0k"))[0] == 401
    assert asgi(layer, scope("127.0.0.1", path="/config", cookie="a=b; access-token-c1=t0k"))[0] == 200
    assert asgi(layer, scope("127.0.0.1", path="/config", cookie="access-token-unsecure-c1=t0k"))[0] == 200
    status, body = asgi(layer, scope("127.0.0.1", path="/"))   # the login page: no API description
    assert status == 200 and b"named_endpoints" not in body
    status, body = asgi(layer, scope("127.0.0.1", path="/", cookie="access-token-c1=t0k"))
    assert b"named_endpoints" in body                          # logged in: Gradio's page as it is
    assert asgi(SecurityLayer(inner, password=True), scope("127.0.0.1", path="/config"))[0] == 401
    assert asgi(layer, scope("127.0.0.1", path="/monitoring", cookie="access-token-c1=t0k"))[0] == 404   # off


# ------------------------------------------------------------------ behind a trusted proxy (--trusted-proxy 127.0.0.1)
def test_a_trusted_proxy_names_the_client_for_the_login_throttle(proxied):
    times = timed_failures(proxied, [f"198.51.100.{i}" for i in range(5)])
    assert max(times) < 0.9                                    # five clients, one failure each
    # what a client writes into the header before the proxy's own entry does not make it someone else
    times = timed_failures(proxied, [f"10.9.9.{i}, 198.51.100.50" for i in range(4)])
    assert max(times[:3]) < 0.9 and times[3] >= 0.9
    login(proxied, headers={"X-Forwarded-For": "198.51.100.50"})


def test_run_history_behind_a_proxy_with_a_forged_localhost(proxied):
    cookies = login(proxied)
    for path in ("gradio_api/runs", "gradio_api/run-history/records"):
        r = http(proxied, "GET", path, cookies=cookies, headers={"Host": "localhost", "X-Forwarded-For": "203.0.113.9"})
        assert r.status_code == 403, (path, r.text)
    assert http(proxied, "GET", "gradio_api/runs", cookies=cookies, headers={"Host": "localhost"}).status_code == 200
    assert http(proxied, "GET", "gradio_api/runs", cookies=cookies,
                headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 200
    assert http(proxied, "GET", "gradio_api/runs", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 401


def test_monitoring_when_asked_for_is_behind_the_login(proxied):
    for path in ("monitoring", "monitoring/summary", "monitoring/0123456789"):
        assert http(proxied, "GET", path).status_code == 401, path
    cookies = login(proxied)
    r = http(proxied, "GET", "monitoring", cookies=cookies, headers={"Host": "evil.example"})
    assert r.status_code == 200 and "log" in r.text
    summary = http(proxied, "GET", "monitoring/summary", cookies=cookies)
    assert summary.status_code == 200 and "functions" in summary.json()
    log = proxied.log()
    assert "evil.example" not in log and "studio.example/monitoring" not in log     # no URL from the caller's Host


def test_a_trusted_proxy_names_the_client_for_the_quota(proxied):
    """Behind the proxy the client is the proxy's own entry: a client writing another address before it
    each time still holds at most 3 jobs, and another client has a quota of its own (without a trusted
    proxy every header is ignored: test_abandoned_calls_are_cancelled_and_others_are_served)."""
    cookies = login(proxied)
    data = {"data": full("text2img", heavy(proxied, cookies=cookies))}
    codes = [http(proxied, "POST", "gradio_api/call/text2img", json=data, cookies=cookies,
                  headers={"X-Forwarded-For": f"10.9.9.{i}, 203.0.113.60"}).status_code for i in range(4)]
    assert codes == [200, 200, 200, 400]
    other = http(proxied, "POST", "gradio_api/call/text2img", json=data, cookies=cookies,
                 headers={"X-Forwarded-For": "203.0.113.61"})
    assert other.status_code == 200, other.text
