"""Image -> image (SDEdit): the fifth task, on tiny models for the logic and the built-in model
for what a user sees."""
import numpy as np
import pytest
from PIL import Image

from ldm_core.pipelines.img2img import start_step
from ldm_core.tasks.img2img import Img2ImgRequest
from ldm_core.tasks.text2img import Text2ImgRequest
from ldm_core.requests import RequestError


def arr(img):
    return np.asarray(img, dtype=np.int16)


def picture(w=32, h=32):
    a = np.full((h, w, 3), 255, np.uint8)
    a[h // 4: h // 2, w // 4: w // 2] = (220, 40, 40)
    return Image.fromarray(a)


def test_strength_sets_how_many_steps_run():
    assert [start_step(20, s) for s in (0.0, 0.25, 0.5, 1.0)] == [20, 15, 10, 0]


@pytest.mark.parametrize("model", ["tiny-img2img", "tiny-compvis-img2img"])
def test_runs_at_the_inputs_size_and_reports_only_the_steps_it_runs(stack, model):
    seen = []
    r = stack.run(Img2ImgRequest(image=picture(37, 29), prompt="a red circle", strength=0.5, steps=8, seed=3,
                                 model=model, num_images=2), callback=lambda s: seen.append((s.step, s.total)))
    assert [im.size for im in r.images] == [(37, 29)] * 2 and r.info["size"] == "37x29"
    assert seen[-1] == (4, 4) and len(seen) == 4
    assert r.info["strength"] == 0.5 and r.info["task"] == "img2img" and [i["seed"] for i in r.per_image] == [3, 4]


def test_strength_zero_gives_the_input_back_and_seeds_reproduce(stack):
    img = picture()
    r = stack.run(Img2ImgRequest(image=img, strength=0.0, model="tiny-img2img"))
    assert arr(r.images[0]).tolist() == arr(img).tolist()
    a = stack.run(Img2ImgRequest(image=img, prompt="x", strength=0.7, seed=5, steps=4, model="tiny-img2img"))
    b = stack.run(Img2ImgRequest(image=img, prompt="x", strength=0.7, seed=5, steps=4, model="tiny-img2img"))
    assert arr(a.images[0]).tolist() == arr(b.images[0]).tolist()


@pytest.mark.parametrize("bad, match", [({"strength": 1.5}, "strength"), ({"strength": "lots"}, "strength"),
                                        ({"image": b"not an image"}, "image"), ({"width": 5000}, "width")])
def test_bad_requests_say_what_is_wrong(stack, bad, match):
    with pytest.raises(RequestError, match=match):
        stack.run(Img2ImgRequest(**{"image": picture(), "prompt": "a", "model": "tiny-img2img", **bad}))


def test_builtin_model_keeps_the_input_in_proportion_to_one_minus_strength():
    """On the built-in model: the lower the strength, the closer the result to its input (mean
    over 3 seeds), and at full strength the result is a new picture."""
    from ldm_core.stack import ModelStack
    stack = ModelStack(device="cpu")
    base = stack.run(Text2ImgRequest(prompt="a red circle left of a blue square", seed=1)).images[0]

    def change(strength):
        r = stack.run(Img2ImgRequest(image=base, prompt="a red circle left of a blue square", strength=strength,
                                     seed=7, num_images=3))
        return np.mean([np.abs(arr(im) - arr(base)).mean() for im in r.images])
    low, mid, high = change(0.1), change(0.5), change(1.0)
    assert low < 1.5 and low < mid < high and high > 5, (low, mid, high)
