"""Load: 16 concurrent gradio_client clients against the real server on the built-in models.

Every request is answered with an image or a clear "busy, try again"; the server's resident
memory after warm-up stays within 10 %. The soak variant (`-m slow`) sends 20 rounds
(320 requests) instead of 3."""
import threading
import time
from pathlib import Path

import pytest

from ldm_core.provenance import read_parameters
from servers import webui

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "models" / "catalog.toml"
CLIENTS = 16
STEPS = 5   # the built-in models at 5 steps: the load is the server's, not the sampler's
REQUESTS = [  # a mix of tabs, each client cycling through it
    dict(prompt="a red circle left of a blue square", steps=STEPS, api_name="/text2img"),
    dict(prompt="", boxes='[{"label": "green square", "box": [0.1, 0.1, 0.5, 0.5]}]', steps=STEPS,
         api_name="/layout2img"),
    dict(prompt="a yellow triangle", steps=STEPS, num_images=2, api_name="/text2img"),
]

pytestmark = pytest.mark.skipif(not (ROOT / "models" / "shapes-text2img" / "model_index.json").is_file(),
                                reason="built-in models not in models/")


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    with webui(CATALOG, tmp_path_factory.mktemp("load") / "out", "--offline", "--preload") as s:
        yield s


def _round(clients, rnd: int) -> list:
    """Every client sends one request at once; returns each one's answer (result or exception)."""
    answers = [None] * len(clients)

    def one(i):
        try:
            answers[i] = clients[i].predict(**REQUESTS[(i + rnd) % len(REQUESTS)])
        except Exception as e:  # noqa: BLE001 - checked by the caller
            answers[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return answers


def _check(answers) -> tuple[int, int]:
    from gradio_client.utils import QueueError
    images = busy = 0
    for a in answers:
        if isinstance(a, QueueError) and "try again" in str(a).lower():
            busy += 1
            continue
        assert not isinstance(a, BaseException), repr(a)
        gallery, _ = a
        assert gallery and read_parameters(gallery[0]["image"])["steps"] == STEPS
        images += 1
    return images, busy


def _load(studio, rounds: int):
    from gradio_client import Client
    # sixteen users behind a proxy on this machine: each its own address (X-Forwarded-For)
    clients = [Client(studio.url, verbose=False, headers={"X-Forwarded-For": f"10.0.0.{i + 1}"})
               for i in range(CLIENTS)]
    _check(_round(clients, 0))               # warm-up: every client, every kind of request

    warm = studio.rss_kb()
    t0, images, busy, peak = time.time(), 0, 0, warm
    for r in range(rounds):
        i, b = _check(_round(clients, r))
        images, busy, peak = images + i, busy + b, max(peak, studio.rss_kb())
    end = studio.rss_kb()
    print(f"\n{rounds * CLIENTS} requests from {CLIENTS} clients in {time.time() - t0:.1f}s: {images} images, "
          f"{busy} busy; RSS after warm-up {warm / 1024:.0f} MB, peak {peak / 1024:.0f} MB, end {end / 1024:.0f} MB")
    assert images + busy == rounds * CLIENTS and images > 0
    assert end <= 1.10 * warm, f"RSS grew from {warm} kB to {end} kB"


def test_sixteen_clients_every_request_answered_memory_flat(studio):
    _load(studio, rounds=3)


@pytest.mark.slow
def test_soak_320_requests_memory_flat(studio):
    _load(studio, rounds=20)
