"""Several devices in one process (issue #30): a stack and a thread per device, requests routed to a
free device that holds their model, the same pixels on either, Stop on one leaving the other running."""
from __future__ import annotations

import re
import threading
from concurrent.futures import Future

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from ldm_core.catalog import Catalog
from ldm_core.jobs import Done, GenerationCancelled, Progress
from ldm_core.pool import DevicePool, device_list, threads_per_device
from ldm_core.service import Service
from ldm_core.stack import ModelStack
from ldm_core.tasks import TASKS
from ldm_core.tasks.text2img import Text2ImgRequest
from server.fair_use import generation_concurrency

from servers import webui
from test_public_link import call


class FakeStack:
    def __init__(self, models=()):
        self.models = set(models)
        self.futures: list[Future] = []

    def holds(self, model):
        return model in self.models

    def submit(self, fn, *args):
        f = Future()
        self.futures.append(f)
        return f


def test_a_request_goes_to_a_free_device_holding_its_model_else_a_free_one_else_the_least_loaded():
    a, b, c = FakeStack(), FakeStack({"m"}), FakeStack({"m"})
    pool = DevicePool([a, b, c])
    assert pool.reserve(["m"]) is b                  # free and holding it
    assert pool.reserve(["m"]) is c                  # the next free one holding it
    assert pool.reserve(["m"]) is a                  # free, though it must load it
    assert pool.loads() == [1, 1, 1]
    f = pool.submit(b, lambda: None)                 # b's request runs on its thread
    assert pool.loads() == [1, 1, 1]
    f.set_result(None)                               # and is done: b is free again
    assert pool.loads() == [1, 0, 1]
    assert pool.reserve(["m"]) is b
    assert pool.reserve(["x"]) is a                  # none free: the least loaded, the first on a tie
    assert pool.loads() == [2, 1, 1]


def test_devices_flag():
    assert device_list(None) == [] and device_list("cpu,cpu") == ["cpu", "cpu"]
    with pytest.raises(ValueError, match="not a device"):
        device_list("gpu0")
    with pytest.raises(ValueError, match="cuda:7 is not here"):
        device_list("cuda:7")
    assert threads_per_device(["cpu"]) is None and threads_per_device(["cpu", "cpu"]) >= 1


def request(seed: int, steps: int = 12) -> Text2ImgRequest:
    return Text2ImgRequest(prompt="a red circle", steps=steps, seed=seed, width=64, height=64, model="tiny-text2img")


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture
def two_cpus(tiny_catalog, tmp_path):
    stacks = [ModelStack(Catalog.load(tiny_catalog), device="cpu", threads=1, output_dir=tmp_path / f"o{i}")
              for i in range(2)]
    return Service(stacks)


def finish(job):
    done = [ev for ev in job if isinstance(ev, Done)]
    return done[0]


def test_two_requests_run_at_the_same_time_on_two_devices_and_give_the_single_device_pixels(
        two_cpus, tiny_catalog, tmp_path, monkeypatch):
    task = TASKS["text2img"]
    both_running = threading.Barrier(2, timeout=120)     # one device thread could never pass it alone
    threads = set()

    class Meeting:
        def __getattr__(self, name):
            return getattr(task, name)

        def call(self, *args, **kw):
            threads.add(threading.get_ident())
            both_running.wait()
            return task.call(*args, **kw)
    monkeypatch.setitem(TASKS, "text2img", Meeting())
    jobs = [two_cpus.start(request(seed)) for seed in (7, 8)]
    done = [finish(j) for j in jobs]
    assert len(threads) == 2 and all(s.holds("tiny-text2img") for s in two_cpus.pool.stacks)
    monkeypatch.setitem(TASKS, "text2img", task)
    single = Service(ModelStack(Catalog.load(tiny_catalog), device="cpu", output_dir=tmp_path / "single"))
    for seed, d in zip((7, 8), done):
        alone = single.generate(request(seed))[0][0]
        assert np.array_equal(pixels(d.paths[0]), pixels(alone))
    assert two_cpus.pool.loads() == [0, 0]


def test_stop_on_one_device_leaves_the_other_running(two_cpus):
    for s in two_cpus.pool.stacks:       # both hold the model: each request goes to a free one
        s.load("tiny-text2img")
    stopped, other = two_cpus.start(request(1, steps=400)), two_cpus.start(request(2, steps=40))
    with pytest.raises(GenerationCancelled):
        for ev in stopped:
            if isinstance(ev, Progress):
                stopped.cancel()
    assert len(finish(other).paths) == 1


def test_the_server_runs_one_generation_per_device(tiny_catalog, tmp_path):
    """`--devices cpu,cpu`: two API calls made together run at once (their run intervals, from the
    timing log, overlap); with one device they take turns."""
    with webui(tiny_catalog, tmp_path / "out", "--devices", "cpu,cpu", "--max-seconds", "120") as s:
        params = ["a", "", 60, 3.0, 1, 1, 128, 128, "DDIM", "tiny-text2img"]
        call(s, "text2img", ["a", "", 1, 3.0, 1, 1, 32, 32, "DDIM", "tiny-text2img"])    # both not yet warm: fine
        results = [None, None]

        def one(i):
            results[i] = call(s, "text2img", params)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
        [t.start() for t in threads]
        [t.join(300) for t in threads]
        assert all("event: complete" in r for r in results), results
        runs = [(float(a), float(a) + float(b)) for a, b in
                re.findall(r"text2img from ([\d.]+): run ([\d.]+) s", s.log())][-2:]
        (a0, a1), (b0, b1) = sorted(runs)
        assert b0 < a1, runs           # the second began before the first ended


def test_generation_events_run_one_per_device():
    with gr.Blocks() as demo:
        box = gr.Textbox()
        box.submit(lambda x: x, box, box, concurrency_id="gpu")
        box.change(lambda x: x, box, box, concurrency_id="gpu")
        box.blur(lambda x: x, box, box)
    generation_concurrency(demo, "gpu", 3)
    limits = [(fn.concurrency_id, fn.concurrency_limit) for fn in demo.fns.values()]
    assert sorted(n for cid, n in limits if cid == "gpu") == [3, 3]
    assert [n for cid, n in limits if cid != "gpu"] == ["default"]
