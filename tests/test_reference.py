"""The studio's pipelines against diffusers' reference pipelines, on tiny weights of the hub
models' own component classes and configs (the mirrors of ldm_core.hub_mirror): same seed, same
sampler, every deliberate difference switched off -> at most 1 grey level apart.

The deliberate differences and their switches (docs/hub-models.md):
super-resolution back-projection (`back_projection=0`) and averaging (`average=1`); inpainting's
exact unmasked pixels (`keep_unmasked=False`) and max-pooled mask (`mask_downsampling="nearest"`);
the masked image's latent is the autoencoder posterior's mode (diffusers draws a sample: the
reference is handed that same latent)."""
import numpy as np
import pytest
import torch
from PIL import Image

from ldm_core.catalog import Catalog
from ldm_core.pipelines.common import encode_latents, pil_to_tensor
from ldm_core.stack import ModelStack

SEED, STEPS = 7, 3


@pytest.fixture(scope="module")
def stack(hub_mirrors, tmp_path_factory):
    return ModelStack(Catalog.load(), device="cpu", output_dir=tmp_path_factory.mktemp("out"))


def colourful(w, h, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def assert_close(ours, ref):
    a, b = np.asarray(ours, dtype=np.int16), np.asarray(ref, dtype=np.int16)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= 1, f"max difference {np.abs(a - b).max()} grey levels"
    assert a.std() > 0                                           # not a blank image on both sides


def test_text2img_matches_LDMTextToImagePipeline(stack):
    from diffusers import DDIMScheduler, LDMTextToImagePipeline
    pipe = stack.load("ldm-text2im-large-256")
    ref = LDMTextToImagePipeline(vqvae=pipe.vae, bert=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
                                 scheduler=DDIMScheduler.from_config(pipe.published_scheduler_config))
    ref.set_progress_bar_config(disable=True)
    prompt = "a painting of a squirrel eating a burger"
    ours = pipe(prompt, "", 64, 64, STEPS, 6.0, [SEED], "DDIM").images[0]
    theirs = ref(prompt, height=64, width=64, num_inference_steps=STEPS, guidance_scale=6.0, eta=0.0,
                 generator=torch.Generator().manual_seed(SEED)).images[0]
    assert_close(ours, theirs)


def test_superres_matches_LDMSuperResolutionPipeline(stack):
    from diffusers import DDIMScheduler, LDMSuperResolutionPipeline
    pipe = stack.load("ldm-super-resolution-4x-openimages")
    ref = LDMSuperResolutionPipeline(vqvae=pipe.vae, unet=pipe.unet,
                                     scheduler=DDIMScheduler.from_config(pipe.published_scheduler_config))
    ref.set_progress_bar_config(disable=True)
    low = colourful(32, 64)                                      # the reference rounds sides down to 32
    ours = pipe(low, STEPS, [SEED], "DDIM", back_projection=0, average=1).images[0]
    theirs = ref(image=low, num_inference_steps=STEPS, eta=0.0, generator=torch.Generator().manual_seed(SEED)).images[0]
    assert_close(ours, theirs)
    assert ours.size == (128, 256)


def sd_reference(cls, pipe):
    """diffusers' Stable Diffusion pipeline `cls` on the studio pipeline's own components, with the
    model's published scheduler and no safety checker."""
    import diffusers
    published = getattr(diffusers, pipe.published_scheduler_config["_class_name"])
    ref = cls(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
              scheduler=published.from_config(pipe.published_scheduler_config), safety_checker=None,
              feature_extractor=None, requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    return ref


def test_inpaint_matches_StableDiffusionInpaintPipeline(stack):
    from diffusers import StableDiffusionInpaintPipeline
    pipe = stack.load("stable-diffusion-inpainting")
    ref = sd_reference(StableDiffusionInpaintPipeline, pipe)
    image, mask = colourful(64, 64, 1), Image.new("L", (64, 64), 0)
    mask.paste(255, (10, 20, 45, 50))
    m = torch.from_numpy(np.asarray(mask) > 127).float()[None, None]
    masked_latents = encode_latents(pipe.vae, pil_to_tensor(image) * (m < 0.5))   # the posterior's mode, as ours
    ours = pipe("a red cat", image, mask, "", 64, 64, STEPS, 7.5, [SEED], "Model default",
                keep_unmasked=False, mask_downsampling="nearest").images[0]
    theirs = ref("a red cat", image=image, mask_image=mask, masked_image_latents=masked_latents, height=64, width=64,
                 num_inference_steps=STEPS, guidance_scale=7.5, generator=torch.Generator().manual_seed(SEED)).images[0]
    assert_close(ours, theirs)
    # the studio's defaults: outside the mask exactly the input; inside the same generation
    default = np.asarray(pipe("a red cat", image, mask, "", 64, 64, STEPS, 7.5, [SEED], "Model default",
                              mask_downsampling="nearest").images[0])
    outside = np.asarray(mask) == 0
    assert (default[outside] == np.asarray(image)[outside]).all()


def test_layout_matches_StableDiffusionGLIGENPipeline(stack):
    from diffusers import StableDiffusionGLIGENPipeline
    pipe = stack.load("gligen-1-4-generation-text-box")
    ref = sd_reference(StableDiffusionGLIGENPipeline, pipe)
    boxes = [("a cat", (0.1, 0.2, 0.5, 0.9)), ("a dog", (0.55, 0.1, 0.95, 0.6))]
    ours = pipe("a cat and a dog", boxes, "", 64, 64, STEPS, 7.5, [SEED], "Model default").images[0]
    theirs = ref(prompt="a cat and a dog", gligen_phrases=[b[0] for b in boxes],
                 gligen_boxes=[list(b[1]) for b in boxes],
                 height=64, width=64, num_inference_steps=STEPS, guidance_scale=7.5,
                 generator=torch.Generator().manual_seed(SEED)).images[0]
    assert_close(ours, theirs)
