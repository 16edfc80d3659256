"""The unconditional and class-conditional tasks (paper §4.1-4.2) on tiny random models: seeds,
DDIM eta, classes by name, synonym or index, one class per image, guidance only where trained."""
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from ldm_core.pipelines.class2img import ClassConditionalPipeline
from ldm_core.pipelines.class_embedder import ClassEmbedder
from ldm_core.pipelines.unconditional import UnconditionalPipeline
from ldm_core.provenance import read_parameters
from ldm_core.requests import RequestError
from ldm_core.tasks.class2img import Class2ImgRequest, parse_classes, shapes_world_classes
from ldm_core.tasks.unconditional import UnconditionalRequest
from ldm_core.testing import tiny_cond_unet, tiny_vae
from ldm_core.zoo import imagenet_classes


def _pixels(image):
    return np.asarray(image, dtype=np.int16)


def test_unconditional_seeds_are_per_image_and_eta_draws_noise(service):
    both = service.run(UnconditionalRequest(num_images=2, seed=11, sampler="DDIM", eta=1.0, steps=3))
    alone = service.run(UnconditionalRequest(num_images=1, seed=12, sampler="DDIM", eta=1.0, steps=3))
    assert both.info["seeds"] == [11, 12] and both.info["eta"] == 1.0
    # batch-invariant, eta > 0 too (a batch of 2 may round differently from 1 on another CPU: a grey level)
    assert np.abs(_pixels(both.images[1]) - _pixels(alone.images[0])).max() <= 1
    again = service.run(UnconditionalRequest(num_images=1, seed=12, sampler="DDIM", eta=1.0, steps=3))
    assert np.array_equal(_pixels(again.images[0]), _pixels(alone.images[0]))    # reproducible
    still = service.run(UnconditionalRequest(num_images=1, seed=12, sampler="DDIM", eta=0.0, steps=3))
    assert not np.array_equal(_pixels(still.images[0]), _pixels(alone.images[0]))  # eta changes the path


@pytest.mark.parametrize("request_, message", [
    (UnconditionalRequest(eta=0.5, sampler="Euler"), "applies to the DDIM sampler only"),
    (UnconditionalRequest(eta=2.0, sampler="DDIM"), "eta must be between 0.0 and 1.0"),
    (UnconditionalRequest(width=36), "multiple of 8"),
    (Class2ImgRequest(class_name="red cirle"), "unknown class 'red cirle'"),
    (Class2ImgRequest(class_name="red circle; blue square"), "2 classes given for 1 image"),
    (Class2ImgRequest(class_name=""), "give a class"),
    (Class2ImgRequest(class_name="99"), "class index 99 is not one of this model's classes 0-23"),
])
def test_bad_requests_say_what_is_wrong(service, request_, message):
    with pytest.raises(RequestError, match=message):
        service.run(request_)


def test_classes_by_name_synonym_index_or_json_list():
    names = imagenet_classes()
    assert len(names) == 1000 and names[1].startswith("goldfish")
    assert parse_classes("goldfish; 207 ; tabby cat", names) == [1, 207, 281]   # a synonym of "tabby, tabby cat"
    assert parse_classes('[1, "tench"]', names) == [1, 0] and parse_classes(3, names) == [3]
    with pytest.raises(RequestError, match="did you mean 'tabby, tabby cat'"):
        parse_classes("cat", names)   # whole-word matches are suggested before "bullfrog, Rana catesbeiana"
    assert shapes_world_classes()[:2] == ("red circle", "red square") and len(shapes_world_classes()) == 24


def test_one_class_per_image_cycling_with_guidance_recorded_per_image(service):
    result = service.run(Class2ImgRequest(class_name="blue diamond; 0", num_images=3, seed=4, guidance_scale=2.0))
    assert result.info["class_name"] == "blue diamond; red circle" and result.info["guidance_scale"] == 2.0
    assert [p["class_name"] for p in result.per_image] == ["blue diamond", "red circle", "blue diamond"]
    paths = service.save(result)
    assert read_parameters(paths[1])["class_name"] == "red circle"
    # image i alone, from its own recorded class and seed, is the same picture (per-image seeds; a batch
    # of 2B rows through the UNet may round differently from 2 rows: within a grey level)
    alone = service.run(Class2ImgRequest(class_name=result.per_image[1]["class_name"], seed=5, guidance_scale=2.0))
    assert np.abs(_pixels(alone.images[0]) - _pixels(result.images[1])).max() <= 1


def _class_pipe(null_class):
    names = [f"c{i}" for i in range(3)]
    torch.manual_seed(0)
    embedder = ClassEmbedder(4 if null_class is not None else 3, 32, names, null_class)
    return ClassConditionalPipeline(tiny_vae(), tiny_cond_unet(4), embedder,
                                    DDIMScheduler(num_train_timesteps=1000, clip_sample=False))


def test_guidance_runs_only_with_a_null_class_and_uses_its_token():
    with pytest.raises(ValueError, match="trained without a null class"):
        _class_pipe(None)(class_labels=[0], height=32, width=32, num_inference_steps=2, guidance_scale=3.0)
    pipe = _class_pipe(3)
    ctx = pipe.encode_classes([1, 2], do_cfg=True)                     # (2B, 1, D): null first, as denoise expects
    assert ctx.shape == (4, 1, 32)
    assert torch.equal(ctx[0], pipe.class_embedder.embedding.weight[3][None])
    assert torch.equal(ctx[3], pipe.class_embedder.embedding.weight[2][None])
    plain = pipe(class_labels=[1], height=32, width=32, num_inference_steps=2, guidance_scale=1.0, seeds=[0])
    guided = pipe(class_labels=[1], height=32, width=32, num_inference_steps=2, guidance_scale=4.0, seeds=[0])
    assert not np.array_equal(_pixels(plain.images[0]), _pixels(guided.images[0]))
    with pytest.raises(ValueError, match="class index 3 is not one of"):
        pipe(class_labels=[3], height=32, width=32, num_inference_steps=2)    # the null class is not asked for


def test_the_unet_size_multiple_is_said():
    from diffusers import UNet2DModel
    unet = UNet2DModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16, 16),
                       down_block_types=("DownBlock2D",) * 3, up_block_types=("UpBlock2D",) * 3, layers_per_block=1,
                       norm_num_groups=8)
    pipe = UnconditionalPipeline(tiny_vae(), unet, DDIMScheduler())
    with pytest.raises(ValueError, match="multiples of 16 for this model"):
        pipe(height=40, width=48, num_inference_steps=1)
    assert pipe(height=48, width=32, num_inference_steps=1).images[0].size == (32, 48)


def test_xyplot_over_classes_and_eta(service):
    from ldm_core.compositions.xyplot import Axis, XYPlotRequest
    grid = service.run(XYPlotRequest(Class2ImgRequest(class_name="red circle"), Axis("class_name", "red circle, 5"),
                                     Axis("guidance_scale", "1, 3")))
    assert grid.info["xyplot"]["x_values"] == ["red circle", "5"] and len(grid.images) == 1
    plot = service.run(XYPlotRequest(UnconditionalRequest(sampler="DDIM"), Axis("eta", "0, 1")))
    assert plot.info["xyplot"]["x_axis"] == "eta"
    with pytest.raises(RequestError, match="this task has no guidance_scale"):
        service.run(XYPlotRequest(UnconditionalRequest(), Axis("guidance_scale", "1, 3")))
