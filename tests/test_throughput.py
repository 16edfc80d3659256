"""The time a request will take, predicted from the model's speed measured on this device: a
request predicted to run past the time limit is refused before it starts, saying what would fit."""
from dataclasses import replace

import pytest

import ldm_core.throughput as T
from ldm_core.limits import DEFAULT_LIMITS
from ldm_core.requests import RequestError
from ldm_core.service import Service
from ldm_core.tasks import TASKS
from ldm_core.tasks.text2img import Text2ImgRequest

TRUE = T.Fit(a=2.0, b=30.0, c=1.0, r=0.05, s=0.01)   # what the fake device costs


class Clock:
    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


def fake_device(clock: Clock):
    """run_task for `measure`: each step and the rest cost what TRUE says, on the fake clock."""
    def run_task(checked, callback):
        w, h, k = checked.task.output_size(checked.request)
        mp = w * h * k / 1e6
        for _ in range(checked.request.steps):
            clock.now += TRUE.step(mp)
            if callback is not None:
                callback(None)
        clock.now += TRUE.r + TRUE.c * mp
    return run_task


@pytest.fixture
def service(tiny_catalog, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(T, "time", clock)
    s = Service.from_catalog(tiny_catalog, device="cpu", limits=replace(DEFAULT_LIMITS, max_seconds=10.0))
    entry = s.catalog.default("text2img")
    s.throughput.measure(fake_device(clock), T.example_at(TASKS["text2img"], entry, s.catalog, s.limits))
    return s


def test_the_fit_recovers_the_devices_cost(service):
    fit = service.throughput.fits["tiny-text2img"]
    for got, want in ((fit.s, TRUE.s), (fit.a, TRUE.a), (fit.b, TRUE.b), (fit.r, TRUE.r), (fit.c, TRUE.c)):
        assert got == pytest.approx(want, rel=1e-3, abs=1e-6)


def test_a_request_that_would_run_past_the_limit_is_refused_with_what_fits(service):
    small = Text2ImgRequest(prompt="a", width=32, height=32, steps=4, model="tiny-text2img")
    assert service.plan(small).first                                     # well within 10 s
    big = replace(small, width=512, height=512, steps=150, num_images=2)
    per_step = TRUE.step(512 * 512 / 1e6)
    fits = int((10.0 - 2 * (TRUE.r + TRUE.c * 0.262144)) / (2 * per_step))
    with pytest.raises(RequestError, match=rf"would take about \d+ s here .* allows 10 s per generation: at this size "
                                           rf"and 2 images, at most {fits} steps fit"):
        service.plan(big)
    assert service.plan(replace(big, steps=fits)).first                   # what it said fits, fits
    with pytest.raises(RequestError, match="no step fits at this size"):
        service.plan(replace(big, width=1024, height=1024, steps=1, num_images=8))


def test_a_model_not_measured_has_no_prediction(tiny_catalog):
    s = Service.from_catalog(tiny_catalog, device="cpu", limits=replace(DEFAULT_LIMITS, max_seconds=10.0))
    assert s.plan(Text2ImgRequest(prompt="a", width=512, height=512, steps=150, model="tiny-text2img")).first


def test_calibrate_measures_each_tasks_default_model_here(tiny_catalog):
    s = Service.from_catalog(tiny_catalog, device="cpu")
    done = s.calibrate(["text2img", "superres"])
    assert set(done) == {"tiny-text2img", "tiny-superres"} and set(s.throughput.fits) == set(done)
    assert all(f.a >= 0 and f.b >= 0 and f.step(0.01) > 0 for f in s.throughput.fits.values())


def test_calibration_in_the_background_lets_a_visitors_request_go_between_its_runs(tiny_catalog):
    import time
    s = Service.from_catalog(tiny_catalog, device="cpu")
    s.calibrate_in_background()
    measured_then = s.submit(lambda: len(s.throughput.fits)).result(60)     # a request arriving now
    deadline = time.time() + 120
    while len(s.throughput.fits) < len(s.tasks):
        assert time.time() < deadline
        time.sleep(0.1)
    assert measured_then < len(s.tasks)                 # it ran before the calibration had finished


def test_a_request_predicted_a_little_past_the_limit_still_runs(service):
    """A prediction can be a few times too high on a busy CPU: up to UNCERTAINTY x the limit, the request is
    admitted (the per-step deadline stops it if it really runs over)."""
    from ldm_core.service import UNCERTAINTY
    req = Text2ImgRequest(prompt="a", width=512, height=512, steps=8, model="tiny-text2img")
    predicted = service.throughput.estimate(service.plan(req).first[0]).seconds
    assert 10.0 < predicted < UNCERTAINTY * 10.0
