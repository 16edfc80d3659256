"""`webui.py --mcp`: the tasks as MCP tools, through the `mcp` package's own client, on the real
server (tiny models); the gates of the HTTP API hold for them (login, quota, budget, owners)."""
import asyncio
import base64
import io
import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from servers import webui

from ldm_core.history import owner_folder
from ldm_core.provenance import read_parameters

ALICE, BOB = ("alice", "secret"), ("bob", "hunter2")
TASK_TOOLS = {"text2img", "layout2img", "superres", "inpaint", "img2img", "unconditional", "class2img",
              "semantic2img", "xyplot"}


def mcp_url(server) -> str:
    return server.url + "gradio_api/mcp/"


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def with_mcp(server, use, headers: dict | None = None, timeout: float = 300):
    """`await use(session)` in an initialised MCP session with the server (streamable HTTP)."""
    import httpx
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def run():
        async with httpx.AsyncClient(headers=headers or {}, timeout=httpx.Timeout(timeout)) as http:
            async with streamable_http_client(mcp_url(server), http_client=http) as (read, write, _):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    return await use(session)
    return asyncio.run(asyncio.wait_for(run(), timeout))


def call(server, tool: str, arguments: dict, headers: dict | None = None):
    async def use(session):
        return await session.call_tool(tool, arguments)
    return with_mcp(server, use, headers)


def tools(server, headers: dict | None = None):
    async def use(session):
        return (await session.list_tools()).tools
    return with_mcp(server, use, headers)


def images_and_text(result) -> tuple[list[bytes], list[str]]:
    assert not result.isError, result.content
    pngs = [base64.b64decode(c.data) for c in result.content if c.type == "image"]
    return pngs, [c.text for c in result.content if c.type == "text"]


def pixels(png) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png) if isinstance(png, bytes) else png).convert("RGB"))


def made_with(out: Path, prompt: str) -> list[Path]:
    """The results in the output folder (any owner's) whose prompt is `prompt`."""
    return [p for p in out.rglob("*.png") if (read_parameters(p) or {}).get("prompt") == prompt]


def http_status(url: str, method: str = "GET", headers: dict | None = None, data: bytes | None = None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers)


class FakeGradio:
    """What SecurityLayer reads of Gradio's App: its login tokens and its cookies' name."""
    cookie_id = "test"

    def __init__(self):
        self.tokens = {}


def make_layer(password: bool = True):
    from server.security import SecurityLayer
    return SecurityLayer(None, password=password, gradio_app=FakeGradio(), mcp=True, logins=[ALICE])


def through_layer(layer, path: str, peer: str, headers: list):
    """One request through SecurityLayer with --mcp: (the scope Gradio got or None, the status, the start message)."""
    seen, sent = {}, {}

    async def app(scope, receive, send):
        seen.update(scope)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            sent.update(message)
    layer.app = app
    scope = {"type": "http", "method": "POST", "path": path, "headers": list(headers), "client": (peer, 5000)}
    asyncio.run(layer(scope, receive, send))
    return (seen or None), sent["status"], sent


def test_a_stamp_is_believed_only_from_this_machine_with_the_secret():
    from server.mcp_tools import STAMP
    layer = make_layer(password=False)
    forged = [(STAMP, json.dumps(["guess", "10.9.9.9", "alice"]).encode())]
    seen, status, _ = through_layer(layer, "/gradio_api/queue/join", "127.0.0.1", forged)
    assert status == 200 and seen["client"][0] == "127.0.0.1" and STAMP not in dict(seen["headers"])
    stamped = {"headers": []}
    layer.gate.stamp(stamped, "10.9.9.9", "alice")
    seen, _, _ = through_layer(layer, "/gradio_api/queue/join", "203.0.113.9", stamped["headers"])
    assert seen["client"][0] == "203.0.113.9" and layer.user(seen) is None     # from elsewhere: not believed
    seen, _, _ = through_layer(layer, "/gradio_api/queue/join", "127.0.0.1", stamped["headers"])
    assert seen["client"][0] == "10.9.9.9" and layer.user(seen) == "alice"     # the server's own loopback call
    assert STAMP not in dict(seen["headers"])


def test_an_mcp_request_needs_the_login_and_is_stamped_with_its_client():
    from server.mcp_tools import REALM, STAMP
    layer = make_layer()
    seen, status, sent = through_layer(layer, "/gradio_api/mcp/", "203.0.113.9", [])
    assert seen is None and status == 401 and (b"www-authenticate", REALM) in sent["headers"]
    wrong = [(b"authorization", b"Basic " + base64.b64encode(b"alice:nope"))]
    assert through_layer(layer, "/gradio_api/mcp/", "203.0.113.9", wrong)[1] == 401
    right = [(b"authorization", b"Basic " + base64.b64encode(":".join(ALICE).encode()))]
    assert through_layer(layer, "/gradio_api/queue/join", "203.0.113.9", right)[1] == 401   # Basic: MCP only
    seen, status, _ = through_layer(layer, "/gradio_api/mcp/", "203.0.113.9", right)
    assert status == 200 and layer.user(seen) == "alice"
    secret, client, user = json.loads(dict(seen["headers"])[STAMP])
    assert (secret, client, user) == (layer.gate.secret, "203.0.113.9", "alice")


@pytest.fixture(scope="module")
def studio(tiny_catalog, tmp_path_factory):
    with webui(tiny_catalog, tmp_path_factory.mktemp("mcp") / "out", "--mcp", "--max-jobs-per-client", "1") as s:
        yield s


@pytest.fixture(scope="module")
def api(studio):
    from gradio_client import Client
    return Client(studio.url, verbose=False)


def test_the_tools_are_the_api_endpoints_described(studio, api):
    listed = {t.name: t for t in tools(studio)}
    endpoints = api.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(listed) == {name.lstrip("/") for name in endpoints} == TASK_TOOLS   # no UI event is a tool
    t2i = listed["text2img"]
    params = [p["parameter_name"] for p in endpoints["/text2img"]["parameters"]]
    assert list(t2i.inputSchema["properties"]) == params and t2i.inputSchema["required"] == ["prompt"]
    assert t2i.description.startswith("Text → Image: a caption in, images out")
    assert "PNG" in t2i.description                                        # what comes back
    for tool in listed.values():                                           # every parameter says what it is
        assert tool.description and all(p.get("description") for p in tool.inputSchema["properties"].values())
    assert t2i.inputSchema["properties"]["seed"]["description"].startswith("-1 = random")
    assert "white = repaint" in listed["inpaint"].inputSchema["properties"]["mask"]["description"]


def test_text2img_tool_gives_the_api_s_image_for_the_same_seed(studio, api):
    request = {"prompt": "a red circle over mcp", "seed": 42, "steps": 3, "num_images": 2}
    pngs, texts = images_and_text(call(studio, "text2img", request))
    assert len(pngs) == 2
    info = json.loads(texts[-1])
    assert info["seeds"] == [42, 43] and info["steps"] == 3
    assert all(t.startswith("Image URL: " + studio.url + "gradio_api/file=") for t in texts[:-1])
    assert read_parameters(io.BytesIO(pngs[0]))["seed"] == 42          # the PNG itself, its parameters kept
    images, _ = api.predict(**request, api_name="/text2img")
    assert np.array_equal(pixels(pngs[0]), pixels(images[0]["image"]))
    assert np.array_equal(pixels(pngs[1]), pixels(images[1]["image"]))


def test_one_image_endpoint_and_a_file_input(studio):
    tiny = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(tiny, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(tiny.getvalue()).decode()
    pngs, texts = images_and_text(call(studio, "superres", {"image": url, "steps": 2, "seed": 1}))
    assert len(pngs) == 1 and Image.open(io.BytesIO(pngs[0])).size == (64, 64)
    assert json.loads(texts[-1])["task"] == "superres"


def test_an_oversized_request_gets_the_budget_message(studio, api):
    request = {"prompt": "too much", "width": 512, "height": 512, "steps": 500}
    result = call(studio, "text2img", request)
    assert result.isError
    message = " ".join(c.text for c in result.content)
    assert "compute budget" in message and "megapixel-steps" in message
    with pytest.raises(Exception) as refused:                          # the API's own answer, word for word
        api.predict(**request, api_name="/text2img")
    assert str(refused.value) in message


def test_the_per_client_quota_counts_mcp_calls(studio, api):
    held = api.submit(prompt="a long one", steps=500, num_images=4, api_name="/text2img")
    try:
        deadline = time.time() + 120
        while held.status().code.name != "PROCESSING":
            assert time.time() < deadline and not held.done(), "the held job never started"
            time.sleep(0.1)
        result = call(studio, "text2img", {"prompt": "one more", "steps": 2})
        assert result.isError
        assert "you already have 1 generations running or waiting" in " ".join(c.text for c in result.content)
    finally:
        held.cancel()
        deadline = time.time() + 120
        while not held.done() and time.time() < deadline:
            time.sleep(0.1)


def test_an_mcp_client_s_results_are_its_own(studio, api):
    images_and_text(call(studio, "text2img", {"prompt": "mine via mcp", "seed": 5, "steps": 2}))
    api.predict(prompt="theirs via http", seed=5, steps=2, api_name="/text2img")
    (mine,), (theirs,) = made_with(studio.out, "mine via mcp"), made_with(studio.out, "theirs via http")
    assert mine.parent.name.startswith("by-") and mine.parent != theirs.parent   # in a folder of its own


def test_without_the_flag_there_are_no_mcp_routes(tiny_catalog, tmp_path):
    with webui(tiny_catalog, tmp_path / "out") as s:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        assert http_status(mcp_url(s), "POST", headers, body)[0] == 404
        assert http_status(s.url + "gradio_api/mcp/sse")[0] == 404


@pytest.fixture(scope="module")
def locked(tiny_catalog, tmp_path_factory):
    out = tmp_path_factory.mktemp("mcp-auth") / "out"
    with webui(tiny_catalog, out, "--mcp", "--auth", ":".join(ALICE), "--auth", ":".join(BOB)) as s:
        yield s


def test_with_auth_an_mcp_client_logs_in(locked):
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    status, answer = http_status(mcp_url(locked), "POST", headers, body)
    assert status == 401 and answer.get("www-authenticate", "").startswith("Basic")
    assert http_status(mcp_url(locked), "POST", {**headers, **basic("alice", "wrong")}, body)[0] == 401
    for route in ("schema", "sse"):                                   # every MCP route, the same
        assert http_status(mcp_url(locked) + route)[0] == 401
    assert http_status(mcp_url(locked) + "schema", headers=basic(*ALICE))[0] == 200
    with pytest.raises(Exception):
        tools(locked)
    assert {t.name for t in tools(locked, basic(*ALICE))} == TASK_TOOLS

    pngs, texts = images_and_text(call(locked, "text2img", {"prompt": "alice via mcp", "seed": 7, "steps": 2},
                                       basic(*ALICE)))
    (made,) = made_with(locked.out, "alice via mcp")
    assert made.parent.name == owner_folder("user:alice")           # alice's, as her web session's are
    assert np.array_equal(pixels(pngs[0]), pixels(made))
    url = texts[0].removeprefix("Image URL: ")
    assert http_status(url)[0] == 401 and http_status(url, headers=basic(*ALICE))[0] == 200


def test_with_auth_a_login_cookie_also_serves(locked):
    import httpx
    login = httpx.post(locked.url + "login", data={"username": BOB[0], "password": BOB[1]})
    assert login.status_code == 200
    cookie = "; ".join(f"{k}={v}" for k, v in login.cookies.items())
    pngs, _ = images_and_text(call(locked, "text2img", {"prompt": "bob via mcp", "steps": 2}, {"Cookie": cookie}))
    assert made_with(locked.out, "bob via mcp")[0].parent.name == owner_folder("user:bob")
