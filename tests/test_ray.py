"""Generation on a Ray Serve deployment (issue #30), on a local cluster of this machine's 2 CPUs with
two replicas of the tiny test stack: requests spread over both, previews and Stop cross the boundary,
the pixels are a single process's. The server over HTTP, and a replica killed mid-request:
tests/test_ray_server.py."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from PIL import Image

from ldm_core.catalog import Catalog
from ldm_core.jobs import Done, GenerationCancelled, Progress
from ldm_core.service import Service
from ldm_core.stack import ModelStack
from ldm_core.tasks.text2img import Text2ImgRequest

ray = pytest.importorskip("ray", reason="Ray Serve is an optional extra: pip install .[cluster]")
from ldm_core.cluster import ClusterConfig, RayBackend, Replicas, ReplicaLost  # noqa: E402


@pytest.fixture(scope="module")
def cluster(tiny_catalog, tmp_path_factory):
    from ray import serve
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        backend = RayBackend.start(ClusterConfig(replicas=Replicas(2, 2), gpus=0, cpus=1), str(tiny_catalog))
        front = ModelStack(Catalog.load(tiny_catalog), device="cpu", output_dir=tmp_path_factory.mktemp("front"))
        yield Service(front, remote=backend)
    finally:
        serve.shutdown()
        ray.shutdown()


def request(seed: int, steps: int = 10, size: int = 64) -> Text2ImgRequest:
    return Text2ImgRequest(prompt="a red circle", steps=steps, seed=seed, width=size, height=size,
                           model="tiny-text2img")


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_replicas_parse():
    assert Replicas.parse("2") == Replicas(2, 2) and Replicas.parse("1-4") == Replicas(1, 4)
    for bad in ("0", "4-1", "x", "1-2-3"):
        with pytest.raises(ValueError, match="--ray-replicas"):
            Replicas.parse(bad)


def test_concurrent_requests_spread_over_both_replicas_with_a_single_process_pixels(cluster, tiny_catalog,
                                                                                    tmp_path):
    backend = cluster.remote
    before = len(backend.ran_on)
    jobs = [cluster.start(request(seed, steps=40)) for seed in (3, 4)]     # at once: one replica each
    done = [[ev for ev in job if isinstance(ev, Done)][0] for job in jobs]
    assert len(set(backend.ran_on[before:])) == 2, backend.ran_on
    single = Service(ModelStack(Catalog.load(tiny_catalog), device="cpu", threads=1, output_dir=tmp_path))
    for seed, d in zip((3, 4), done):
        assert np.array_equal(pixels(d.paths[0]), pixels(single.generate(request(seed, steps=40))[0][0]))
        assert d.info["seed"] == seed and d.info["model"] == "tiny-text2img"


def test_previews_come_back_and_stop_stops_the_replicas_pipeline(cluster):
    backend = cluster.remote
    job = cluster.start(request(5, steps=500, size=128))
    looks = []
    with pytest.raises(GenerationCancelled):
        for ev in job:
            if isinstance(ev, Progress):
                looks.append(ev.preview)
                if ev.preview is not None:
                    job.cancel()
    assert any(look is not None for look in looks)
    stopped_on = backend.ran_on[-1]
    # a replica takes one request at a time: the next one it starts says how its last one ended
    for seed in range(20):
        results = []
        threads = [threading.Thread(target=lambda s=s: results.append(cluster.generate(request(s)))) for s in
                   (seed, seed + 100)]
        [t.start() for t in threads]
        [t.join(120) for t in threads]
        if stopped_on in backend.ran_on[-2:]:
            break
    assert backend.seen[stopped_on]["cancelled"] >= 1, backend.seen


def test_an_error_on_the_replica_reaches_the_user_as_itself(cluster):
    bad = request(1)
    bad.model = "tiny-superres"          # not a text model: refused by the replica's own check too
    with pytest.raises(Exception) as caught:
        cluster.remote.run(bad, None)
    assert "tiny-superres" in str(caught.value) and not isinstance(caught.value, ReplicaLost)
