"""Pipeline logic on tiny random-weight models of every catalog pipeline class."""
import numpy as np
import pytest
import torch
from PIL import Image

from ldm_core.pipelines import SAMPLERS, GenerationCancelled
from ldm_core.tasks.inpaint import InpaintRequest
from ldm_core.tasks.layout2img import Layout2ImgRequest
from ldm_core.tasks.superres import SuperResRequest
from ldm_core.tasks.text2img import Text2ImgRequest
from ldm_core.requests import RequestError

TEXT_MODELS = ["tiny-text2img", "tiny-compvis-text2im"]
BOXES = '[{"label": "red circle", "box": [0.1, 0.1, 0.5, 0.5]}]'


def arr(img):
    return np.asarray(img, dtype=np.int16)


@pytest.mark.parametrize("model", TEXT_MODELS)
def test_text2img_runs_and_reports_each_seed(stack, model):
    r = stack.run(Text2ImgRequest(prompt="a red circle", model=model, seed=10, num_images=2))
    assert [i["seed"] for i in r.per_image] == [10, 11] and r.info["seeds"] == [10, 11]
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


def test_every_sampler_name_has_an_implementation():
    """ldm_core.options types the sampler names; common.SAMPLERS maps each, in that order, to a scheduler."""
    from diffusers import DDIMScheduler

    from ldm_core.options import SAMPLER_NAMES
    from ldm_core.pipelines.common import make_scheduler
    assert tuple(SAMPLERS) == SAMPLER_NAMES
    published = {**DDIMScheduler().config, "_class_name": "DDIMScheduler"}
    for name in SAMPLER_NAMES:
        assert hasattr(make_scheduler(published, name), "step"), name


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
        stack.run(Text2ImgRequest(prompt="a red circle", steps=4),
                  callback=lambda s: calls.append(s.step) or s.step == 2)
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


def test_grounding_map_places_each_label_on_its_box():
    from ldm_core.grounding import GROUNDING_CHANNELS, GROUNDING_WORDS, grounding_map, parse_label
    g = grounding_map([("red circle", (0.25, 0.5, 0.5, 0.875)), ("blue", (0.0, 0.0, 0.125, 0.125))], 8, 8)
    assert g.shape == (GROUNDING_CHANNELS, 8, 8)
    red, circle, blue = (GROUNDING_WORDS.index(w) for w in ("red", "circle", "blue"))
    assert g[red, 4:7, 2:4].eq(1).all() and g[red].sum() == 6 and g[circle].sum() == 6
    assert g[blue, 0, 0] == 1 and g[blue].sum() == 1 and g[-1].sum() == 7   # occupancy: both boxes
    assert g[GROUNDING_WORDS.index("square")].sum() == 0                    # "blue" names no shape
    half = grounding_map([("square", (0.0, 0.0, 0.1875, 0.125))], 8, 8)       # 1.5 cells wide
    assert half[-1, 0, 0] == 1 and half[-1, 0, 1] == 0.5 and half[-1, 1].sum() == 0
    assert parse_label("A Red Circles") == ("red", "circle")
    for bad, msg in [("purple circle", "purple"), ("the", "no colour"), ("red blue circle", "blue")]:
        with pytest.raises(ValueError, match=msg):
            parse_label(bad)
    for box, msg in [((0.5, 0.1, 0.5, 0.2), "no area"), ((-0.1, 0, 0.2, 0.2), r"\[0, 1\]")]:
        with pytest.raises(ValueError, match=msg):
            grounding_map([("red circle", box)], 8, 8)


def test_grounded_unet_reads_the_map_and_draws_from_text_alone(stack):
    """The built-in layout model's UNet takes latents + grounding map: the map reaches it in the
    conditional half of the guided batch, empty in the unconditional half and for text alone."""
    from ldm_core.grounding import GROUNDING_CHANNELS
    pipe = stack.load("tiny-layout2img")
    seen = []
    hook = pipe.unet.conv_in.register_forward_hook(
        lambda m, i, o: seen.append(i[0][:, 4:4 + GROUNDING_CHANNELS].clone()))
    try:
        stack.run(Layout2ImgRequest(prompt="", boxes=BOXES, model="tiny-layout2img", steps=2, guidance_scale=3.0))
        g = seen[0]                                        # (2, G, 4, 4): [uncond; cond]
        assert g.shape[0] == 2 and g[0].abs().sum() == 0 and g[1, -1].sum() > 0
        seen.clear()
        from ldm_core.pipelines.text2img import Text2ImgPipeline
        Text2ImgPipeline(**pipe.components)("a red circle", height=32, width=32, num_inference_steps=1)
        assert seen and all(s.abs().sum() == 0 for s in seen)
    finally:
        hook.remove()
    with pytest.raises(RequestError, match="purple"):
        stack.run(Layout2ImgRequest(prompt="", boxes='[{"label": "purple circle", "box": [0.1, 0.1, 0.5, 0.5]}]',
                                    model="tiny-layout2img"))


def test_token_layout_path_for_an_ungrounded_unet(stack):
    """A UNet without map channels reads the boxes as label + corner tokens (paper §4.3)."""
    from ldm_core.pipelines.layout2img import Layout2ImgPipeline
    pipe = Layout2ImgPipeline(**stack.load("tiny-text2img").components)
    assert not pipe.grounded
    with pytest.raises(ValueError, match="tokens"):    # 24-token tokenizer: 3 boxes of 6 tokens + caption
        pipe("a red circle and a blue square", [("red circle", (0.1, 0.1, 0.3, 0.3))] * 3, num_inference_steps=1)
    out = pipe("", [("red circle", (0.1, 0.1, 0.3, 0.3))], num_inference_steps=1, height=32, width=32)
    assert out.images[0].size == (32, 32)


def test_back_projection_makes_the_output_match_its_input():
    import torch.nn.functional as F

    from ldm_core.pipelines.superres import back_project
    g = torch.Generator().manual_seed(0)
    low = F.interpolate(torch.rand(2, 3, 4, 5, generator=g) * 1.6 - 0.8, size=(16, 20), mode="bilinear")  # smooth
    x = torch.rand(2, 3, 64, 80, generator=g) * 2 - 1                  # an output unrelated to its input

    def err(y):
        return (F.interpolate(y, size=(16, 20), mode="bicubic", antialias=True) - low).abs().mean().item()
    assert back_project(x, low, 0).equal(x)
    assert err(back_project(x, low, 5)) < 0.15 * err(x) and err(back_project(x, low, 1)) > err(back_project(x, low, 5))


def test_superres_back_projection_is_on_by_default_and_checked(stack):
    pipe = stack.load("tiny-superres")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    on, off = (pipe(img, num_inference_steps=2, seeds=[1], **kw).images[0] for kw in ({}, {"back_projection": 0}))
    down = [np.asarray(im.resize((16, 16), Image.BICUBIC), dtype=np.float32) for im in (on, off)]
    target = np.asarray(img, dtype=np.float32)
    assert np.abs(down[0] - target).mean() < np.abs(down[1] - target).mean()
    with pytest.raises(ValueError, match="back_projection"):
        pipe(img, num_inference_steps=1, back_projection=-1)


def test_superres_average_is_the_mean_of_its_samples(stack):
    """average=K: each seed's first sample is the plain single sample, and the output is the mean
    of the K decoded samples; other seeds get other samples; bad K is an error."""
    from ldm_core.pipelines.common import decode_latents, to_pil
    from ldm_core.pipelines.superres import sample_seeds
    pipe = stack.load("tiny-superres")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    kw = dict(num_inference_steps=2, back_projection=0)
    single = pipe(img, seeds=[7], output_type="latent", **kw).images            # (1, C, h, w)
    lat = pipe(img, seeds=[7, 8], average=3, output_type="latent", **kw).images  # (6, C, h, w): seed-major
    assert lat.shape[0] == 6 and torch.allclose(lat[0], single[0], atol=1e-5)
    assert sample_seeds([7, 8], 3)[::3] == [7, 8] and len(set(sample_seeds([7, 8], 3))) == 6
    with torch.no_grad():
        mean = decode_latents(pipe.vae, lat).unflatten(0, (2, 3)).mean(1)       # (2, 3, H, W)
    out = pipe(img, seeds=[7, 8], average=3, **kw).images
    assert len(out) == 2
    for o, m in zip(out, to_pil(mean)):
        assert np.abs(arr(o) - arr(m)).max() <= 1
    assert np.abs(arr(out[0]) - arr(pipe(img, seeds=[7], **kw).images[0])).max() > 0
    with pytest.raises(ValueError, match="average"):
        pipe(img, num_inference_steps=1, average=0)


def test_superres_average_comes_from_the_catalog_and_is_reported(stack, monkeypatch):
    import dataclasses
    entry = stack.catalog.get("tiny-superres", "superres")
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    one = stack.run(SuperResRequest(image=img, seed=3, model="tiny-superres", steps=2))
    monkeypatch.setitem(stack.catalog.entries, "tiny-superres", dataclasses.replace(entry, average=2))
    two = stack.run(SuperResRequest(image=img, seed=3, model="tiny-superres", steps=2))
    assert one.info["average"] == 1 and two.info["average"] == 2
    assert np.abs(arr(one.images[0]) - arr(two.images[0])).max() > 0


def _widened(pipe, fill: float):
    """A copy of a superres pipeline whose UNet also reads the bicubic latent, through weights `fill`."""
    from ldm_core.pipelines.superres import SuperResPipeline
    from ldm_core.train.models import widen_input
    unet = widen_input(pipe.unet, pipe.unet.config.in_channels + 4)
    with torch.no_grad():
        unet.conv_in.weight[:, -4:] = fill
    return SuperResPipeline(pipe.vae, unet, pipe.scheduler)


def test_superres_feeds_the_bicubic_latent_to_a_wider_unet(stack):
    """A UNet 4 channels wider reads the latent of the bicubic upsampling: with those weights at
    zero the output is the narrow model's, with weights it changes; other widths are an error."""
    from ldm_core.pipelines.superres import SuperResPipeline, bicubic_latent
    pipe = stack.load("tiny-superres")
    img = Image.fromarray(np.random.default_rng(2).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    kw = dict(num_inference_steps=2, seeds=[4], output_type="latent")
    base = pipe(img, **kw).images
    zero, live = _widened(pipe, 0.0), _widened(pipe, 0.05)
    assert zero.reads_bicubic_latent and not pipe.reads_bicubic_latent
    assert torch.allclose(zero(img, **kw).images, base, atol=1e-5)
    assert not torch.allclose(live(img, **kw).images, base, atol=1e-3)
    low = torch.rand(2, 3, 8, 12) * 2 - 1
    assert bicubic_latent(pipe.vae, low).shape == (2, 4, 8, 12)
    from ldm_core.train.models import widen_input
    odd = SuperResPipeline(pipe.vae, widen_input(pipe.unet, 9), pipe.scheduler)
    with pytest.raises(ValueError, match="takes 9 channels"):
        odd(img, num_inference_steps=1)


def test_superres_grey_input_gives_grey_output(stack):
    pipe = stack.load("tiny-superres")
    rng = np.random.default_rng(3)
    grey = Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).convert("RGB")
    colour = Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    g = arr(pipe(grey, num_inference_steps=2, seeds=[1]).images[0])
    c = arr(pipe(colour, num_inference_steps=2, seeds=[1]).images[0])
    assert (g == g[..., :1]).all()
    assert not (c == c[..., :1]).all()


def test_back_projected_loss_ignores_what_back_projection_restores():
    """The SR autoencoder's loss: a colour offset (low frequency, restored by back-projection)
    costs far less than its plain MSE says; detail noise costs about what it says."""
    from ldm_core.train.autoencoder import back_projected_loss
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32, generator=g) * 1.6 - 0.8
    offset, noise = x + 0.1, x + 0.1 * torch.randn(x.shape, generator=g)
    plain = [float(torch.log((y - x).pow(2).mean() + 1e-5)) for y in (offset, noise)]
    bp = [float(back_projected_loss(y, x, 5)) for y in (offset, noise)]
    assert float(back_projected_loss(x, x, 5)) < -11
    assert bp[0] < plain[0] - 3 and abs(bp[1] - plain[1]) < 1.5
