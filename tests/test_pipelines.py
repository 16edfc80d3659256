"""Pipeline logic on tiny random-weight models of every catalog pipeline class."""
import numpy as np
import pytest
import torch
from PIL import Image

from ldm_core.pipelines import SAMPLERS, GenerationCancelled
from ldm_core.requests import (InpaintRequest, Layout2ImgRequest, RequestError, SuperResRequest, Text2ImgRequest)

TEXT_MODELS = ["tiny-text2img", "tiny-compvis-text2im"]
BOXES = '[{"label": "red circle", "box": [0.1, 0.1, 0.5, 0.5]}]'


def arr(img):
    return np.asarray(img, dtype=np.int16)


@pytest.mark.parametrize("model", TEXT_MODELS)
def test_text2img_runs_and_reports_each_seed(stack, model):
    r = stack.run(Text2ImgRequest(prompt="a red circle", model=model, seed=10, num_images=2))
    assert [i["seed"] for i in r.infos] == [10, 11] and r.info["seeds"] == [10, 11]
    assert all(im.size == (32, 32) and im.mode == "RGB" for im in r.images)


@pytest.mark.parametrize("model", TEXT_MODELS)
def test_same_seed_same_image_whatever_the_batch(stack, model):
    single = stack.run(Text2ImgRequest(prompt="a red circle", model=model, seed=11, num_images=1)).images[0]
    batch = stack.run(Text2ImgRequest(prompt="a red circle", model=model, seed=10, num_images=3)).images
    assert np.abs(arr(single) - arr(batch[1])).max() <= 2       # same seed: same image (float noise only)
    assert np.abs(arr(batch[0]) - arr(batch[1])).max() > 2      # other seeds: other images


def test_negative_prompt_and_guidance_change_the_image(stack):
    base = Text2ImgRequest(prompt="a red circle", seed=5, guidance_scale=7.0)
    a = stack.run(base).images[0]
    b = stack.run(Text2ImgRequest(prompt="a red circle", seed=5, guidance_scale=7.0, negative_prompt="blue")).images[0]
    c = stack.run(Text2ImgRequest(prompt="a red circle", seed=5, guidance_scale=1.0)).images[0]
    assert np.abs(arr(a) - arr(b)).max() > 0 and np.abs(arr(a) - arr(c)).max() > 0


@pytest.mark.parametrize("sampler", list(SAMPLERS))
def test_every_sampler_runs_and_is_reproducible(stack, sampler):
    req = Text2ImgRequest(prompt="a blue square", seed=3, sampler=sampler)
    a, b = stack.run(req).images[0], stack.run(req).images[0]
    assert np.array_equal(arr(a), arr(b))


def test_step_callback_reports_progress_and_interrupts(stack):
    seen = []
    stack.run(Text2ImgRequest(prompt="a red circle", steps=4), callback=lambda s: seen.append((s.step, s.total)))
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    calls = []
    with pytest.raises(GenerationCancelled):
        stack.run(Text2ImgRequest(prompt="a red circle", steps=4), callback=lambda s: calls.append(s.step) or s.step == 2)
    assert calls == [1, 2]
    assert stack.run(Text2ImgRequest(prompt="a red circle", steps=2)).images  # the stack serves on afterwards


@pytest.mark.parametrize("model", ["tiny-layout2img", "tiny-gligen"])
def test_layout(stack, model):
    r = stack.run(Layout2ImgRequest(prompt="shapes", boxes=BOXES, model=model, seed=1, num_images=2))
    assert len(r.images) == 2 and r.info["boxes"][0]["label"] == "red circle"
    again = stack.run(Layout2ImgRequest(prompt="shapes", boxes=BOXES, model=model, seed=2))
    assert np.abs(arr(r.images[1]) - arr(again.images[0])).max() <= 2


def test_layout_too_many_tokens_is_a_clear_error(stack):
    long = "a red circle " * 30
    with pytest.raises(RequestError, match="tokens"):
        stack.run(Layout2ImgRequest(prompt=long, boxes=BOXES))


@pytest.mark.parametrize("model", ["tiny-superres", "tiny-compvis-superres"])
def test_superres_is_4x(stack, model):
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (12, 20, 3), dtype=np.uint8))
    r = stack.run(SuperResRequest(image=img, model=model, seed=1))
    assert r.images[0].size == (80, 48) and r.info["size"] == "80x48"


def test_superres_tiles_large_inputs(stack):
    pipe = stack.load("tiny-superres")
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 40, 3), dtype=np.uint8))
    tiled = pipe(img, num_inference_steps=2, seeds=[0], tile=16, overlap=8).images[0]
    whole = pipe(img, num_inference_steps=2, seeds=[0], tile=64).images[0]
    assert tiled.size == whole.size == (160, 160)
    # tiles are blended: no step at tile borders beyond what the whole image shows
    t = arr(tiled).astype(float)
    jump = np.abs(np.diff(t, axis=1)).mean(axis=(0, 2))
    assert jump.max() < 6 * np.median(jump) + 10


@pytest.mark.parametrize("model", ["tiny-inpaint", "tiny-sd-inpaint"])
def test_inpaint_keeps_pixels_outside_the_mask(stack, model):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    r = stack.run(InpaintRequest(image=img, mask=mask, prompt="a red circle", model=model, seed=0))
    out, src, m = arr(r.images[0]), arr(img), np.asarray(mask) > 0
    assert np.array_equal(out[~m], src[~m])           # outside: unchanged, bit for bit
    assert np.abs(out[m] - src[m]).mean() > 1         # inside: repainted


def test_pipeline_input_checks(stack):
    pipe = stack.load("tiny-text2img")
    with pytest.raises(ValueError, match="multiples of 4"):
        pipe("a", height=30, width=32)
    with pytest.raises(ValueError, match="steps must be at least 1"):
        pipe("a", num_inference_steps=0)
    sr = stack.load("tiny-superres")
    with pytest.raises(ValueError, match="at least 8x8"):
        sr(Image.new("RGB", (4, 4)))
