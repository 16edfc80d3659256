"""Request validation: every bad input gets a clear RequestError before any model runs."""
import io

import numpy as np
import pytest
from PIL import Image

from ldm_core.catalog import Catalog
from ldm_core.limits import Limits
from ldm_core.tasks.inpaint import InpaintRequest, load_mask
from ldm_core.tasks.layout2img import Layout2ImgRequest, parse_boxes
from ldm_core.tasks.superres import SuperResRequest
from ldm_core.tasks.text2img import Text2ImgRequest
from ldm_core.requests import RequestError, load_image
from ldm_core.validation import Work, validate


@pytest.fixture(scope="module")
def catalog(tiny_catalog):
    return Catalog.load(tiny_catalog)


def png_bytes(img, fmt="PNG"):
    b = io.BytesIO()
    img.save(b, format=fmt)
    return b.getvalue()


def test_defaults_come_from_the_catalog(catalog):
    checked = validate(Text2ImgRequest(prompt="a red circle"), catalog)
    req, entry = checked.request, checked.entry
    assert entry.name == "tiny-text2img" and req.model == "tiny-text2img"
    assert (req.steps, req.guidance_scale, req.width, req.height, req.sampler) == (4, 3.0, 32, 32, "DPM++ 2M")


@pytest.mark.parametrize("kwargs,message", [
    (dict(prompt=""), "prompt is empty"),
    (dict(prompt="x" * 10_000), "limit is 1000"),
    (dict(prompt="a", steps=0), "steps must be between"),
    (dict(prompt="a", steps=10_000), "steps must be between"),
    (dict(prompt="a", steps="many"), "whole number"),
    (dict(prompt="a", guidance_scale=-1), "guidance_scale must be between"),
    (dict(prompt="a", guidance_scale=float("nan")), "guidance_scale must be between"),
    (dict(prompt="a", num_images=0), "num_images must be between"),
    (dict(prompt="a", num_images=100), "num_images must be between"),
    (dict(prompt="a", width=20), "width must be between"),
    (dict(prompt="a", width=100_000), "width must be between"),
    (dict(prompt="a", width=60), "multiple of 8"),
    (dict(prompt="a", seed=2 ** 40), "seed must be between"),
    (dict(prompt="a", sampler="PLMS++"), "unknown sampler"),
    (dict(prompt="a", model="../../etc/passwd"), "unknown model"),
    (dict(prompt="a", model="tiny-superres"), "unknown model"),  # a model of another task
])
def test_text2img_rejects(catalog, kwargs, message):
    with pytest.raises(RequestError, match=message):
        validate(Text2ImgRequest(**kwargs), catalog)


@pytest.mark.parametrize("boxes,message", [
    ("{not json", "not valid JSON"),
    ('{"label": "x"}', "must be a JSON list"),
    ('[{"label": "red circle"}]', '"label" and "box"'),
    ('[{"label": "red circle", "box": [0.1, 0.1, 1.5, 0.5]}]', r"lie in \[0, 1\]"),
    ('[{"label": "red circle", "box": [0.5, 0.1, 0.5, 0.5]}]', "zero or negative area"),
    ('[{"label": "", "box": [0.1, 0.1, 0.5, 0.5]}]', "label must be non-empty"),
    ('[{"label": "red circle", "box": [0.1, 0.1, 0.5]}]', "four numbers"),
    ('[{"label": "red circle", "box": ["a", 0.1, 0.5, 0.5]}]', "four numbers"),
    ("[" + ",".join(['{"label": "red circle", "box": [0.1, 0.1, 0.2, 0.2]}'] * 9) + "]", "at most 8"),
])
def test_bad_boxes(boxes, message):
    with pytest.raises(RequestError, match=message):
        parse_boxes(boxes)


def test_good_boxes(catalog):
    req = validate(Layout2ImgRequest(boxes='[{"label": "red circle", "box": [0, 0, 1, 0.5]}]'), catalog).request
    assert req.boxes[0].label == "red circle" and req.boxes[0].box == (0.0, 0.0, 1.0, 0.5)
    with pytest.raises(RequestError, match="at least one box"):
        validate(Layout2ImgRequest(boxes="[]"), catalog)


@pytest.mark.parametrize("mode", ["RGBA", "P", "CMYK", "L", "I;16", "LA"])
def test_image_modes_are_converted(mode):
    img = Image.new("RGB", (20, 10), (200, 30, 30)).convert(mode)
    out = load_image(png_bytes(img, "TIFF" if mode == "CMYK" else "PNG"))
    assert out.mode == "RGB" and out.size == (20, 10)


def test_transparency_goes_on_white():
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert load_image(png_bytes(img)).getpixel((0, 0)) == (255, 255, 255)


def test_not_an_image_truncated_and_too_large(tmp_path):
    with pytest.raises(RequestError, match="not an image"):
        load_image(b"hello, world")
    data = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    with pytest.raises(RequestError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])
    big = png_bytes(Image.new("1", (20_000, 20_000)))  # a decompression bomb: tiny file, 400 Mpixel
    assert len(big) < 2_000_000
    with pytest.raises(RequestError, match="too many pixels|limit is"):
        load_image(big)
    with pytest.raises(RequestError, match="MB"):
        load_image(b"\0" * 100, Limits(max_upload_bytes=10))
    with pytest.raises(RequestError, match="could not be read"):
        load_image(str(tmp_path / "missing.png"))


def test_masks():
    with pytest.raises(RequestError, match="mask is empty"):
        load_mask(png_bytes(Image.new("L", (8, 8), 0)), (8, 8))
    m = load_mask(png_bytes(Image.new("L", (4, 4), 255)), (8, 8))  # other size: resized to the image
    assert m.size == (8, 8) and m.mode == "L" and set(np.unique(np.asarray(m))) == {255}


def test_inpaint_and_superres_requests(catalog):
    img = png_bytes(Image.new("RGB", (32, 32)))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (0, 0, 8, 8))
    req = validate(InpaintRequest(image=img, mask=png_bytes(mask)), catalog).request
    assert req.image.size == (32, 32) and req.mask.size == (32, 32)
    with pytest.raises(RequestError, match="no image"):
        validate(InpaintRequest(image=None, mask=png_bytes(mask)), catalog)
    with pytest.raises(RequestError, match="limit is"):
        validate(SuperResRequest(image=png_bytes(Image.new("RGB", (1024, 1024)))), catalog)


# every input the public-link probe found badly answered, now with a message (docs/security.md)
PROBE = [
    ("lone surrogate", lambda: Text2ImgRequest(prompt="a \ud800"), "not valid Unicode"),
    ("steps infinite", lambda: Text2ImgRequest(prompt="a", steps=float("inf")), "whole number"),
    ("boxes nested 10,000 deep", lambda: Layout2ImgRequest(boxes="[" * 10_000 + "]" * 10_000), "nested too deeply"),
    ("a 5000-digit coordinate", lambda: Layout2ImgRequest(boxes='[{"label": "a", "box": [0, 0, ' + "1" * 5000 +
                                                          ', 1]}]'), "number too long"),
    ("a huge float coordinate", lambda: Layout2ImgRequest(boxes=[{"label": "a", "box": [0, 0, 10 ** 400, 1]}]),
     "four numbers"),
    ("inpaint width out of range", lambda: InpaintRequest(image=Image.new("RGB", (64, 64)),
                                                          mask=Image.new("L", (64, 64), 255), width=100_000),
     "width must be between"),
]


@pytest.mark.parametrize("what,make,message", PROBE, ids=[p[0] for p in PROBE])
def test_probe_inputs_get_clear_messages(catalog, what, make, message):
    with pytest.raises(RequestError, match=message):
        validate(make(), catalog)


def test_images_over_pils_cap_are_called_too_large_and_megabytes_are_decimal(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1024 * 1024)      # what the web server sets
    for side in (1500, 2500):                                         # PIL's warning zone, then its error zone
        data = png_bytes(Image.new("RGB", (side, side)))
        with pytest.raises(RequestError, match="too many pixels"):
            load_image(data)
    with pytest.raises(RequestError, match=r"the limit is 20 MB"):
        load_image(b"\0" * 20_000_001)


def test_the_compute_budget_names_itself(catalog):
    tight = Limits(max_work=1.0)
    with pytest.raises(RequestError, match=r"asks for 4\.1 megapixel-steps \(32x32 pixels x 500 steps x 8 images\)"
                                           r"; this server's compute budget is 1 per request"):
        validate(Text2ImgRequest(prompt="a", steps=500, num_images=8), catalog, Limits(max_steps=1000, max_work=1.0))
    assert validate(Text2ImgRequest(prompt="a"), catalog, tight).request.steps == 4      # within it
    sr = SuperResRequest(image=Image.new("RGB", (64, 64), "red"), steps=10, average=8, model="tiny-superres")
    with pytest.raises(RequestError, match=r"x 8 samples averaged.*or fewer samples averaged"):
        validate(sr, catalog, tight)


def test_the_compute_budget_says_what_would_fit_and_it_does(catalog):
    """Issue #29, item 6: not only the budget, but the steps (or images) that fit at this size."""
    budget = Limits(max_work=64.0)
    ask = dict(prompt="a", width=256, height=256)
    with pytest.raises(RequestError, match=r"78\.6 megapixel-steps .*budget is 64 per request: at 256x256 and 8 "
                                           r"images, at most 122 steps fit; or at most 6 images at 150 steps"):
        validate(Text2ImgRequest(**ask, steps=150, num_images=8), catalog, budget)
    validate(Text2ImgRequest(**ask, steps=122, num_images=8), catalog, budget)       # what it said fits, fits
    validate(Text2ImgRequest(**ask, steps=150, num_images=6), catalog, budget)
    for over in (dict(steps=123, num_images=8), dict(steps=150, num_images=7)):       # and one more does not
        with pytest.raises(RequestError, match="budget"):
            validate(Text2ImgRequest(**ask, **over), catalog, budget)
    with pytest.raises(RequestError, match=r"at 1024x1024 and 1 image not even one step fits"):
        validate(Text2ImgRequest(prompt="a", width=1024, height=1024, steps=100), catalog, Limits(max_work=0.5))


def test_what_fits_counts_a_later_stage_as_fixed_work():
    first = Work(10.0, "64x64 pixels x 10 steps x 2 images", "64x64", 10, 2, 1.0)
    both = first + Work(30.0, "2 x 20 steps to upscale them 4x")
    assert both.how.endswith("then 2 x 20 steps to upscale them 4x") and both.megapixel_steps == 40.0
    assert both.what_fits(35.0) == "at 64x64 and 2 images, at most 5 steps fit; or at most 1 image at 10 steps"
    assert Work(5.0, "4 cells").what_fits(1.0) == ""                 # a work that does not say its steps
