"""The real server on Ray Serve (issue #30): `webui.py --ray auto --ray-replicas 2` starts a local cluster
of this machine's CPUs, deploys two replicas of the tiny stack and serves the HTTP API through them.
Concurrent requests spread over both replicas; killing the replica running a request gives a completed
retry on the other, and the server keeps serving."""
from __future__ import annotations

import os
import re
import signal
import threading
import time

import pytest

from servers import webui
from test_public_link import call, full, http

pytest.importorskip("ray", reason="Ray Serve is an optional extra: pip install .[cluster]")

ON_REPLICA = re.compile(r"generation on replica (\S+) \(pid (\d+)")


@pytest.fixture(scope="module")
def on_ray(tiny_catalog, tmp_path_factory):
    out = tmp_path_factory.mktemp("ray") / "out"
    with webui(tiny_catalog, out, "--ray", "auto", "--ray-replicas", "2", "--max-seconds", "120",
               env={"RAY_USAGE_STATS_ENABLED": "0"}, timeout=300) as s:
        yield s


def test_concurrent_requests_are_served_by_both_replicas(on_ray):
    params = ["a", "", 60, 3.0, 1, 1, 128, 128, "DDIM", "tiny-text2img"]
    before = len(ON_REPLICA.findall(on_ray.log()))
    results = [None, None]

    def one(i):
        results[i] = call(on_ray, "text2img", params)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    [t.start() for t in threads]
    [t.join(300) for t in threads]
    assert all(r and "event: complete" in r for r in results), results
    replicas = {name for name, _ in ON_REPLICA.findall(on_ray.log())[before:]}
    assert len(replicas) == 2, on_ray.log()[-3000:]
    assert len(list(on_ray.out.rglob("*.png"))) >= 2        # saved by the front end, in its output folder


def test_a_replica_killed_mid_request_gives_a_completed_retry_and_the_server_keeps_serving(on_ray):
    before = len(ON_REPLICA.findall(on_ray.log()))
    r = http(on_ray, "POST", "gradio_api/call/text2img",
             json={"data": full("text2img", ["a", "", 400, 3.0, 1, 1, 128, 128, "DDIM", "tiny-text2img"])})
    assert r.status_code == 200, r.text
    deadline = time.time() + 120
    while len(ON_REPLICA.findall(on_ray.log())) == before:
        assert time.time() < deadline, on_ray.log()[-3000:]
        time.sleep(0.2)
    name, pid = ON_REPLICA.findall(on_ray.log())[before]
    os.kill(int(pid), signal.SIGKILL)                    # the replica dies while it generates
    text = http(on_ray, "GET", f"gradio_api/call/text2img/{r.json()['event_id']}", timeout=300).text
    log = on_ray.log()
    assert "running it again on another" in log, log[-3000:]
    assert "event: complete" in text, text[-1000:]
    retried_on = ON_REPLICA.findall(log)[before + 1][0]
    assert retried_on != name
    assert "event: complete" in call(on_ray, "text2img", ["a", "", 2, 3.0, 1, 1, 64, 64, "DDIM", "tiny-text2img"])
