"""Property-based fuzz of request validation: any input is either accepted within the limits
or refused with a RequestError, never another exception."""
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ldm_core.catalog import Catalog
from ldm_core.limits import DEFAULT_LIMITS as L
from ldm_core.tasks.layout2img import parse_boxes
from ldm_core.tasks.text2img import Text2ImgRequest
from ldm_core.requests import RequestError
from ldm_core.validation import validate

anything = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                     st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30))
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(prompt=st.one_of(st.text(max_size=1200), anything), steps=anything, guidance=anything, seed=anything,
       n=anything, width=anything, height=anything, sampler=anything, model=anything)
def test_text2img_validation_never_crashes(tiny_catalog, prompt, steps, guidance, seed, n, width, height, sampler,
                                           model):
    cat = Catalog.load(tiny_catalog)
    req = Text2ImgRequest(prompt=prompt, steps=steps, guidance_scale=guidance, seed=seed, num_images=n, width=width,
                          height=height, sampler=sampler, model=model)
    try:
        checked = validate(req, cat)
        ok, entry = checked.request, checked.entry
    except RequestError:
        return
    assert ok.prompt and L.min_steps <= ok.steps <= L.max_steps and 1 <= ok.num_images <= L.max_images
    assert 0 <= ok.guidance_scale <= L.max_guidance and -1 <= ok.seed <= L.max_seed
    assert ok.width % 8 == 0 and L.min_side <= ok.width <= L.max_side and entry.task == "text2img"


box = st.fixed_dictionaries({"label": st.one_of(st.text(max_size=70), anything),
                             "box": st.one_of(st.lists(st.one_of(st.floats(-1, 2), anything), max_size=6), anything)})


@FUZZ
@given(boxes=st.one_of(st.lists(box, max_size=10).map(json.dumps), st.text(max_size=200), st.lists(box, max_size=10)))
def test_boxes_parse_or_refuse(boxes):
    try:
        parsed = parse_boxes(boxes)
    except RequestError:
        return
    assert len(parsed) <= L.max_boxes
    for b in parsed:
        x0, y0, x1, y1 = b.box
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 and b.label


@FUZZ
@given(data=st.binary(max_size=2000))
def test_random_bytes_are_refused_as_images(tiny_catalog, data):
    from ldm_core.tasks.superres import SuperResRequest
    try:
        validate(SuperResRequest(image=data), Catalog.load(tiny_catalog))
    except RequestError:
        pass
