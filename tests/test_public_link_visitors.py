"""Each visitor's results are their own on a public link (issue 25, items 1 and 2), attacked with
raw HTTP to Gradio's routes as in test_public_link.py: History lists only what a visitor (their
browser's cookie, or their user with --auth) made, the output folder is not served, and the
per-client quota is an atomic reservation however many joins arrive at once."""
import concurrent.futures
import json
import re
import time

import httpx
import pytest
from servers import webui

HOST = "studio.example"
ALICE, BOB = "a" * 32, "b" * 32
T2I = ["alice secret red circle", "", 2, 3.0, 1234, 1, 32, 32, "DDIM", "tiny-text2img", False, "", "", "[]", ""]


@pytest.fixture(scope="module")
def studio(tiny_catalog, tmp_path_factory):
    with webui(tiny_catalog, tmp_path_factory.mktemp("visitors") / "out") as s:
        yield s


@pytest.fixture(scope="module")
def users(tiny_catalog, tmp_path_factory):
    with webui(tiny_catalog, tmp_path_factory.mktemp("users") / "out", "--auth", "a:b", "--auth", "c:d") as s:
        yield s


def http(studio, method, path, visitor=None, client=None, **kw):
    headers = {"Host": HOST, **kw.pop("headers", {})}
    if visitor:
        headers["Cookie"] = f"ldm_visitor={visitor}"
    send = client.request if client is not None else httpx.request
    return send(method, studio.url + path.lstrip("/"), headers=headers, timeout=120, **kw)


def call(studio, api: str, data: list, **kw) -> str:
    r = http(studio, "POST", f"gradio_api/call/{api}", json={"data": data}, **kw)
    assert r.status_code == 200, r.text
    return http(studio, "GET", f"gradio_api/call/{api}/{r.json()['event_id']}", **kw).text


def dependency(studio, elem_id: str, event: str = "click", **kw) -> tuple[int, int]:
    cfg = http(studio, "GET", "config", **kw).json()
    target = next(c["id"] for c in cfg["components"] if c.get("props", {}).get("elem_id") == elem_id)
    dep = next(d for d in cfg["dependencies"] if [target, event] in d["targets"])
    return dep["id"], target


def history(studio, **kw) -> str:
    """The History tab's own Refresh event through /queue/join, as a browser sends it: its output."""
    fn, trigger = dependency(studio, "history-refresh", **kw)
    session = f"h{time.time_ns()}"
    r = http(studio, "POST", "gradio_api/queue/join", json={"data": [], "fn_index": fn, "trigger_id": trigger,
                                                          "session_hash": session, "event_data": None}, **kw)
    assert r.status_code == 200, r.text
    stream = http(studio, "GET", f"gradio_api/queue/data?session_hash={session}", **kw).text
    done = [json.loads(line[6:]) for line in stream.splitlines() if line.startswith("data: ") and
            '"process_completed"' in line]
    assert done and done[0]["success"], stream[-500:]
    return json.dumps(done[0]["output"])


def test_history_shows_each_visitor_only_their_own_results(studio):
    assert "event: complete" in call(studio, "text2img", T2I, visitor=ALICE)
    mine, theirs = history(studio, visitor=ALICE), history(studio, visitor=BOB)
    assert "alice secret red circle" in mine and "seed 1234" in mine
    assert "alice secret" not in theirs and ".png" not in theirs
    assert "alice secret" not in history(studio)                      # no cookie: nothing of anyone's


def test_the_output_folder_is_served_to_no_one(studio):
    call(studio, "text2img", T2I, visitor=ALICE)
    saved = sorted(studio.out.rglob("*.png"))
    assert saved and all(p.parent.name.startswith("by-") for p in saved)   # each in its owner's folder
    for visitor in (BOB, ALICE, None):
        r = http(studio, "GET", f"gradio_api/file={saved[0]}", visitor=visitor)
        assert r.status_code in (403, 404) and b"PNG" not in r.content[:8]


def test_a_new_browser_gets_a_visitor_cookie_and_the_operator_sees_everything(studio):
    r = http(studio, "GET", "")
    assert re.match(r"ldm_visitor=[0-9a-f]{32}; Path=/;.*HttpOnly", r.headers["set-cookie"])
    call(studio, "text2img", T2I, visitor=ALICE)
    local = httpx.get(studio.url + "config", timeout=60)      # this machine's own browser: Host 127.0.0.1
    fn, trigger = next((d["id"], d["targets"][0][0]) for d in local.json()["dependencies"]
                       if any(c.get("props", {}).get("elem_id") == "history-refresh" and [c["id"], "click"] in
                              d["targets"] for c in local.json()["components"]))
    session = "operator1"
    httpx.post(studio.url + "gradio_api/queue/join", json={"data": [], "fn_index": fn, "trigger_id": trigger,
                                                            "session_hash": session, "event_data": None}, timeout=60)
    stream = httpx.get(studio.url + f"gradio_api/queue/data?session_hash={session}", timeout=60).text
    assert "alice secret red circle" in stream
    forged = history(studio, headers={"X-Forwarded-For": "127.0.0.1"})    # not the operator: via a proxy
    assert "alice secret" not in forged


def login(studio, user: str, password: str) -> httpx.Client:
    client = httpx.Client(timeout=120)
    r = client.post(studio.url + "login", data={"username": user, "password": password}, headers={"Host": HOST})
    assert r.status_code == 200, r.text
    return client


def test_with_auth_each_user_sees_only_their_own(users):
    a, c = login(users, "a", "b"), login(users, "c", "d")
    prompt = ["a private prompt", *T2I[1:]]
    r = http(users, "POST", "gradio_api/call/text2img", client=a, json={"data": prompt})
    assert r.status_code == 200, r.text
    assert "event: complete" in http(users, "GET", f"gradio_api/call/text2img/{r.json()['event_id']}", client=a).text
    assert "a private prompt" in history(users, client=a)
    assert "a private prompt" not in history(users, client=c)


def test_the_quota_is_one_reservation_per_job_however_many_join_at_once(studio):
    """16 simultaneous joins from one address: exactly 3 admitted; when they end, room for 3 again."""
    heavy = ["a", "", 40, 3.0, 1, 1, 256, 256, "DDIM", "tiny-text2img", False, "", "", "[]", ""]

    def post(_):
        return http(studio, "POST", "gradio_api/call/text2img", json={"data": heavy})

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(post, range(16)))
    admitted = [r for r in responses if r.status_code == 200]
    assert len(admitted) == 3, [r.status_code for r in responses]
    assert all("3 generations running or waiting" in r.text for r in responses if r.status_code != 200)
    for r in admitted:            # read each to its end: the reservations go with the jobs
        http(studio, "GET", f"gradio_api/call/text2img/{r.json()['event_id']}")
    again = [post(0) for _ in range(3)]
    assert [r.status_code for r in again] == [200] * 3
    for r in again:
        http(studio, "GET", f"gradio_api/call/text2img/{r.json()['event_id']}")


def test_send_to_cannot_reach_another_visitors_file(studio):
    """"Send to" takes the gallery's value from the browser: a forged path to another visitor's result is refused."""
    call(studio, "text2img", T2I, visitor=ALICE)
    theirs = sorted(studio.out.rglob("*.png"))[0]
    fn, trigger = dependency(studio, "t2i-send-superres", visitor=BOB)
    session = f"s{time.time_ns()}"
    gallery = [{"image": {"path": str(theirs), "meta": {"_type": "gradio.FileData"}}, "caption": None}]
    r = http(studio, "POST", "gradio_api/queue/join", visitor=BOB,
             json={"data": [None, gallery], "fn_index": fn, "trigger_id": trigger, "session_hash": session,
                   "event_data": None})
    if r.status_code == 200:
        stream = http(studio, "GET", f"gradio_api/queue/data?session_hash={session}", visitor=BOB).text
        done = [json.loads(line[6:]) for line in stream.splitlines() if '"process_completed"' in line]
        assert done and not done[0]["success"], stream[-500:]
        assert str(theirs) not in json.dumps(done[0].get("output"))
    else:
        assert r.status_code in (400, 403, 422)
