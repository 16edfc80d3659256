"""A job's progress says which stage it is in and how long is left; a stopped job keeps what it
finished (issue #29: live preview, hires progress)."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from ldm_core.compositions.hires import phases
from ldm_core.jobs import GenerationCancelled, Job, Phase, PhaseStep, Progress, TimeLeft, duration, phased
from ldm_core.pipelines.common import StepInfo
from ldm_core.preview import PREVIEW_SIDE, enlarged
from ldm_core.tasks.text2img import Text2ImgRequest


def _thread(fn):
    threading.Thread(target=fn, daemon=True).start()


def _step(i, total, phase=None):
    s = StepInfo(i, total, 0, torch.zeros(1, 4, 8, 8))
    return s if phase is None else PhaseStep(s.step, s.total, s.timestep, s.latents, phase)


def test_a_plain_request_is_one_stage_and_its_time_left_comes_from_its_pace():
    left = TimeLeft()
    plain = Phase()
    assert left.update(plain, 1, 10, now=100.0) is None            # one step: no pace yet
    assert left.update(plain, 3, 10, now=101.0) == pytest.approx(7 * 0.5)
    assert left.untimed == ()
    p = Progress(3, 10, elapsed=1.0, eta=3.5)
    assert (p.phase, p.phase_index, p.phases) == ("denoising", 1, 1)
    assert p.describe() == "denoising · step 3/10 · 1.0 s elapsed · about 3.5 s left"
    assert Progress(1, 10).describe().endswith("estimating the time left")


def test_hires_stages_are_named_and_the_time_left_counts_the_upscaling_once_timed():
    stages = phases(2, (1.0, 4.0))                     # the first stage's work, and each upscale's
    assert [s.label or s.name for s in stages] == ["denoising", "upscaling 1 of 2", "upscaling 2 of 2"]
    assert [(s.index, s.count) for s in stages] == [(1, 3), (2, 3), (3, 3)]
    assert sum(s.share for s in stages) == pytest.approx(1.0)
    assert [s.done_before for s in stages] == pytest.approx([0.0, 1 / 9, 5 / 9])
    left, t = TimeLeft(), 0.0
    for i in range(1, 5):                              # denoising: 0.1 s a step
        eta = left.update(stages[0], i, 4, t)
        t += 0.1
    assert eta == pytest.approx(0.0) and left.untimed == ("upscaling", "upscaling")    # upscaling not guessed
    t += 0.5                                           # decode, then the upscaler's set-up
    for i in range(1, 11):                             # upscaling 1: 1 s a step
        eta = left.update(stages[1], i, 10, t)
        t += 1.0
    assert left.untimed == () and eta == pytest.approx(10 * 1.0)   # the second upscale at the first's pace
    t += 2.0                                           # its decode: counted from now on
    # the first upscale took 13 s from its start: 10 steps and 3 s more; the second has 9 steps to go
    assert left.update(stages[2], 1, 10, t) == pytest.approx(9 * 1.0 + 3.0)
    p = Progress(4, 4, eta=0.0, untimed=("upscaling", "upscaling"))
    assert p.describe().endswith("about 0.0 s left, then upscaling ×2 (not timed yet)")


def test_durations_read_as_people_write_them():
    assert [duration(s) for s in (0.04, 3.14, 42.4, 125)] == ["0.0 s", "3.1 s", "42 s", "2 min 05 s"]


def test_phased_steps_carry_their_stage_and_a_job_reports_it():
    stage = Phase("upscaling", 2, 3, 0.5, (), label="upscaling 1 of 2")
    seen = []
    cb = phased(seen.append, stage)
    cb(_step(1, 4))
    assert isinstance(seen[0], PhaseStep) and seen[0].phase is stage and seen[0].step == 1
    assert phased(None, stage) is None

    def generate(callback):
        go.wait(5)
        for i in range(1, 5):
            callback(_step(i, 4, stage))
            release.wait(5)
        return [], {}
    go, release = threading.Event(), threading.Event()
    job = Job(generate, None, _thread)
    job._due_update = 0.0                             # an update at the first step (not after a second)
    go.set()
    events = iter(job)
    ev = next(events)
    release.set()
    assert isinstance(ev, Progress)
    assert (ev.phase, ev.phase_index, ev.phases) == ("upscaling 1 of 2", 2, 3)
    assert ev.fraction == pytest.approx(0.5 + 0.5 * 1 / 4)     # nothing after it: the first half is done
    assert list(events)[-1].paths == []


def test_a_stopped_job_keeps_its_finished_images_and_what_the_next_looked_like():
    done, infos = [], []
    stage = Phase("upscaling", 3, 3, 0.5, (), done, infos, 3, "upscaling 2 of 2")
    looks = []

    def preview(latents):
        looks.append(Image.new("RGB", (8, 8), "red"))
        return looks[-1]

    def generate(callback):
        done.append(Image.new("RGB", (128, 128)))
        infos.append({"seed": 1})
        for i in range(1, 100):
            if callback(_step(i, 99, stage)):
                raise GenerationCancelled(f"generation cancelled after step {i} of 99")
        return [], {}
    queued = []
    job = Job(generate, preview, queued.append)
    job.cancel()                                      # stopped while it waited for the device: nothing ran
    queued[0]()
    assert job.wait(0) and job.partial().images == []
    job = Job(generate, preview, lambda fn: None)     # started by hand, cancelled at its third step
    calls = {"n": 0}
    inner = job._on_step

    def on_step(s):
        calls["n"] += 1
        if calls["n"] == 3:
            job.cancel()
        return inner(s)
    job._on_step = on_step
    _thread(job._work)
    with pytest.raises(GenerationCancelled):
        list(job)
    assert job.wait(5)
    part = job.partial()
    assert len(part.images) == 1 and part.infos == [{"seed": 1}] and part.expected == 3
    assert (part.step, part.total, part.phase.label) == (3, 99, "upscaling 2 of 2")
    assert part.preview is looks[-1]                  # a look at the step it stopped at


def test_hires_reports_its_stages_and_keeps_the_upscaled_images_when_stopped(service):
    request = Text2ImgRequest(prompt="a red circle", seed=5, num_images=2, hires=True, hires_model="tiny-superres",
                              model="tiny-text2img")
    seen = []

    def generate(callback):
        def watch(s):
            seen.append((s.phase.label or s.phase.name, s.step))
            if s.phase.index == 3:                    # the second upscale: stop it
                job.cancel()
            return callback(s)
        return service.generate(request, watch)
    job = Job(generate, None, lambda fn: None)
    _thread(job._work)
    with pytest.raises(GenerationCancelled):
        list(job)
    labels = [label for label, _ in seen]
    assert labels[:5] == ["denoising"] * 4 + ["upscaling 1 of 2"] and labels[-1] == "upscaling 2 of 2"
    part = job.partial()
    assert [im.size for im in part.images] == [(128, 128)] and part.expected == 2
    assert part.infos[0]["seed"] == 5 and part.infos[0]["hires_model"] == "tiny-superres"


def test_hires_still_returns_every_image_when_it_runs_through(service):
    r = service.run(Text2ImgRequest(prompt="a", seed=1, num_images=2, hires=True, model="tiny-text2img"))
    assert len(r.images) == 2 and len(r.per_image) == 2


def test_small_previews_are_enlarged_as_crisp_blocks():
    tiny = Image.fromarray(np.arange(8 * 8 * 3, dtype=np.uint8).reshape(8, 8, 3))
    big = enlarged(tiny)
    assert big.size == (PREVIEW_SIDE, PREVIEW_SIDE)
    a = np.asarray(big)
    assert (a[:32, :32] == np.asarray(tiny)[0, 0]).all()          # one latent pixel: one 32x32 block
    wide = Image.new("RGB", (64, 16))
    assert enlarged(wide).size == (256, 64)
    large = Image.new("RGB", (300, 200))
    assert enlarged(large) is large
