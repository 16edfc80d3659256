"""The catalog's hub models, run through the studio's real download path (HF_HUB_OFFLINE=1)
against faithful mirrors of their hub repositories (ldm_core.hub_mirror): the published file
listings, variants, configs and tokenizer limits, with widths shrunk. No pickle is ever opened
unless the catalog says the pinned commit has nothing else (then only through weights_only)."""
import re

import pytest
from PIL import Image

from ldm_core import hub
from ldm_core.catalog import Catalog, CatalogError
from ldm_core.hub_mirror import REPOS, bert_vocab, clip_vocab
from ldm_core.stack import ModelLoadError, ModelStack
from ldm_core.tasks.img2img import Img2ImgRequest
from ldm_core.tasks.inpaint import InpaintRequest
from ldm_core.tasks.layout2img import Layout2ImgRequest
from ldm_core.tasks.superres import SuperResRequest
from ldm_core.tasks.text2img import Text2ImgRequest

CATALOG = Catalog.load()
HUB = {e.name: e for e in CATALOG.entries.values() if e.is_hub}
BOX = '[{"label": "a cat", "box": [0.1, 0.2, 0.5, 0.9]}]'


@pytest.fixture(scope="module")
def stack(hub_mirrors, tmp_path_factory):
    return ModelStack(CATALOG, device="cpu", output_dir=tmp_path_factory.mktemp("out"))


def test_every_hub_entry_is_pinned_to_a_mirrored_commit():
    assert len({e.repo_id for e in HUB.values()}) == 5 and len(HUB) == 6   # img2img runs the text2img files
    for e in HUB.values():
        assert re.fullmatch(r"[0-9a-f]{40}", e.revision), e.name
        assert REPOS[e.repo_id].commit == e.revision          # the mirror copies the pinned commit
        assert e.pickle_weights == REPOS[e.repo_id].pickle_weights


def test_a_moving_revision_is_refused(tmp_path):
    cat = tmp_path / "c.toml"
    cat.write_text('[[model]]\nname = "x"\ntask = "text2img"\nsource = "hub:CompVis/ldm-text2im-large-256"\n'
                   'revision = "refs/pr/10"\npipeline = "Text2ImgPipeline"\n')
    with pytest.raises(CatalogError, match="40-hex commit"):
        Catalog.load(cat)


# what each model fetches on a CPU (fp32 compute): one precision, nothing the studio does not run
EXPECTED = {
    "ldm-text2im-large-256": {"bert/pytorch_model.bin", "unet/diffusion_pytorch_model.bin",
                              "vqvae/diffusion_pytorch_model.bin", "tokenizer/vocab.txt"},
    "ldm-super-resolution-4x-openimages": {"unet/diffusion_pytorch_model.fp16.safetensors",
                                           "vqvae/diffusion_pytorch_model.fp16.safetensors"},
    "gligen-1-4-generation-text-box": {"unet/diffusion_pytorch_model.bin", "text_encoder/pytorch_model.bin",
                                       "vae/diffusion_pytorch_model.bin", "tokenizer/vocab.json",
                                       "tokenizer/merges.txt"},
    "stable-diffusion-inpainting": {"unet/diffusion_pytorch_model.fp16.safetensors",
                                    "text_encoder/model.fp16.safetensors",
                                    "vae/diffusion_pytorch_model.fp16.safetensors",
                                    "tokenizer/vocab.json", "tokenizer/merges.txt"},
}
EXPECTED["ldm-text2im-large-256-img2img"] = EXPECTED["ldm-text2im-large-256"]   # the same files, another task
EXPECTED["ldm-celebahq-256"] = {"unet/diffusion_pytorch_model.bin", "vqvae/diffusion_pytorch_model.bin"}


@pytest.mark.parametrize("name", sorted(HUB))
def test_the_plan_fetches_exactly_what_the_pipeline_needs(hub_mirrors, name):
    e = HUB[name]
    p = hub.model_plan(e.repo_id, e.revision, pickle_weights=e.pickle_weights)
    weights = {f for f in p.files if f.endswith((".safetensors", ".bin"))}
    assert EXPECTED[name] - {f for f in EXPECTED[name] if not f.endswith((".safetensors", ".bin"))} == weights
    assert EXPECTED[name] <= set(p.files) and "model_index.json" in p.files
    assert not any(f.startswith(("safety_checker/", "feature_extractor/")) or f.endswith(".ckpt") for f in p.files)
    assert not any(f.endswith(".bin") for f in p.files) or e.pickle_weights
    listing = REPOS[e.repo_id].files
    assert p.total_bytes == sum(listing[f] for f in p.files)
    if e.repo_id not in ("CompVis/ldm-text2im-large-256", "CompVis/ldm-celebahq-256"):   # (one precision only)
        assert p.total_bytes < sum(listing.values()) / 1.5      # not both precisions, no safety checker
    fp16 = hub.model_plan(e.repo_id, e.revision, prefer_fp16=True, pickle_weights=e.pickle_weights)
    fp16_weights = [f for f in fp16.files if f.endswith((".safetensors", ".bin"))]
    assert all(".fp16." in f for f in fp16_weights) or name.startswith(("ldm-text2im", "ldm-celebahq"))  # fp32 only
    assert hub.missing(p) == {}                                  # the mirror holds them: cached and ready
    ok, note = CATALOG.availability(e)
    assert ok and note.startswith("hub, cached and ready")


def test_published_sizes_are_said(hub_mirrors):
    sizes = {n: hub.model_plan(e.repo_id, e.revision, pickle_weights=e.pickle_weights).total_bytes / 1e9
             for n, e in HUB.items()}
    assert 6.0 < sizes["ldm-text2im-large-256"] < 6.3           # fp32 pickles: bert 2.33 + unet 3.49 + vqvae
    assert 0.33 < sizes["ldm-super-resolution-4x-openimages"] < 0.35   # fp16 safetensors, not 0.68 GB of fp32 pickles
    assert 2.1 < sizes["stable-diffusion-inpainting"] < 2.2      # fp16 UNet + CLIP + VAE, no safety checker


NATIVE_AND_AWKWARD = [
    ("ldm-text2im-large-256", dict(width=256, height=256)), ("ldm-text2im-large-256", dict(width=72, height=40)),
    ("ldm-text2im-large-256", dict(width=32, height=32)),
    ("gligen-1-4-generation-text-box", dict(width=512, height=512)),
    ("gligen-1-4-generation-text-box", dict(width=40, height=88)),
    ("ldm-super-resolution-4x-openimages", (64, 64)), ("ldm-super-resolution-4x-openimages", (60, 60)),
    ("ldm-super-resolution-4x-openimages", (100, 60)), ("ldm-super-resolution-4x-openimages", (36, 52)),
    ("ldm-super-resolution-4x-openimages", (8, 9)),
    ("stable-diffusion-inpainting", (512, 512)), ("stable-diffusion-inpainting", (37, 61)),
    ("stable-diffusion-inpainting", (100, 60)), ("stable-diffusion-inpainting", (9, 9)),
    ("ldm-text2im-large-256-img2img", (256, 256)), ("ldm-text2im-large-256-img2img", (37, 61)),
]


@pytest.mark.parametrize("name,size", NATIVE_AND_AWKWARD, ids=[f"{n}-{s}" for n, s in NATIVE_AND_AWKWARD])
def test_hub_model_runs_at_native_and_awkward_sizes(stack, hub_mirrors, name, size):
    task = HUB[name].task
    if task == "text2img":
        req = Text2ImgRequest(prompt="a painting of a cat", model=name, steps=2, **size)
        want = (size["width"], size["height"])
    elif task == "layout2img":
        req = Layout2ImgRequest(prompt="a cat", boxes=BOX, model=name, steps=2, **size)
        want = (size["width"], size["height"])
    elif task == "superres":
        req = SuperResRequest(image=Image.new("RGB", size, (200, 40, 40)), model=name, steps=2)
        want = (size[0] * 4, size[1] * 4)
    elif task == "img2img":
        req = Img2ImgRequest(image=Image.new("RGB", size, (20, 200, 40)), prompt="a cat", strength=0.5, model=name,
                             steps=4)
        want = size
    else:
        mask = Image.new("L", size, 0)
        mask.paste(255, (0, 0, size[0] // 2 + 1, size[1]))
        req = InpaintRequest(image=Image.new("RGB", size, (20, 200, 40)), mask=mask, prompt="a cat", model=name,
                             steps=2)
        want = size
    result = stack.run(req)
    assert result.images[0].size == want
    assert not hub_mirrors.exists(), "a booby-trapped pickle was unpickled"


def test_the_papers_text_model_reads_77_tokens_of_a_long_prompt(stack, hub_mirrors):
    pipe = stack.load("ldm-text2im-large-256")
    assert pipe.tokenizer.model_max_length == 512 and pipe.text_encoder.config.max_position_embeddings == 77
    long = "a painting of a red dog and a blue cat left of a horse " * 12     # ~170 tokens
    r = stack.run(Text2ImgRequest(prompt=long, model="ldm-text2im-large-256", steps=1, width=64, height=64))
    assert any("reads 77" in w for w in r.info["warnings"])
    short = stack.run(Text2ImgRequest(prompt="a cat", model="ldm-text2im-large-256", steps=1, width=64, height=64))
    assert "warnings" not in short.info


def test_clip_prompts_are_cut_at_77_with_a_warning(stack, hub_mirrors):
    long = "a painting of a red dog " * 20
    mask = Image.new("L", (64, 64), 255)
    r = stack.run(InpaintRequest(image=Image.new("RGB", (64, 64)), mask=mask, prompt=long,
                                 model="stable-diffusion-inpainting", steps=1))
    assert any("reads 77" in w for w in r.info["warnings"])


def test_model_default_sampler_is_the_published_scheduler(stack, hub_mirrors):
    mask = Image.new("L", (64, 64), 255)
    r = stack.run(InpaintRequest(image=Image.new("RGB", (64, 64)), mask=mask, prompt="x",
                                 model="stable-diffusion-inpainting", steps=2))
    assert r.info["sampler"] == "Model default" and r.info["scheduler"] == "DDIMScheduler"
    r = stack.run(Layout2ImgRequest(prompt="x", boxes=BOX, model="gligen-1-4-generation-text-box", steps=2,
                                    width=64, height=64))
    assert r.info["scheduler"] == "PNDMScheduler"
    r = stack.run(Layout2ImgRequest(prompt="x", boxes=BOX, model="gligen-1-4-generation-text-box", steps=2,
                                    width=64, height=64, sampler="Euler"))
    assert r.info["scheduler"] == "EulerDiscreteScheduler"


def test_mirror_tokenizers_keep_the_hubs_special_tokens_and_limits(stack, hub_mirrors):
    bert = stack.load("ldm-text2im-large-256").tokenizer
    assert (bert.pad_token_id, bert.unk_token_id, bert.cls_token_id, bert.sep_token_id) == (0, 100, 101, 102)
    assert len(bert) == len(bert_vocab())
    clip = stack.load("stable-diffusion-inpainting").tokenizer
    assert clip.model_max_length == 77 and clip.eos_token_id == len(clip_vocab()) - 1
    assert clip.pad_token == "<|endoftext|>"


def test_a_malicious_pickle_is_refused_and_never_runs(tmp_path, monkeypatch):
    """A pickle the studio does read (pickle_weights) goes through torch.load(weights_only=True):
    one that would run code is refused with a clear error, and the code does not run."""
    import huggingface_hub.constants as constants

    from ldm_core.hub_mirror import GLIGEN, _trap, write_mirror
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    marker = tmp_path / "pwned"
    snapshot = write_mirror(tmp_path / "cache", GLIGEN, marker)
    unet = snapshot / "unet" / "diffusion_pytorch_model.bin"
    target = unet.resolve()
    unet.unlink()
    evil = tmp_path / "evil.bin"
    evil.write_bytes(_trap(marker))
    unet.symlink_to(evil)
    assert target.exists()
    s = ModelStack(CATALOG, device="cpu")
    with pytest.raises(ModelLoadError, match="unet"):
        s.load("gligen-1-4-generation-text-box")
    assert not marker.exists()
    assert not s._components                                   # nothing half-loaded stays


def test_not_downloaded_offline_is_said_and_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    e = HUB["stable-diffusion-inpainting"]
    ok, note = CATALOG.availability(e)
    assert not ok and "cannot be downloaded here" in note
    s = ModelStack(CATALOG, device="cpu")
    mask = Image.new("L", (64, 64), 255)
    with pytest.raises(ModelLoadError, match="not downloaded"):
        s.run(InpaintRequest(image=Image.new("RGB", (64, 64)), mask=mask, prompt="x", model=e.name, steps=1))


def test_download_command_fetches_and_reports(hub_mirrors, capsys):
    from ldm_core.__main__ import main
    assert main(["download", "--all"]) == 0
    out = capsys.readouterr().out
    assert "stable-diffusion-inpainting: stable-diffusion-v1-5/stable-diffusion-inpainting@8a4288a76071, 12 files, " \
           "2.14 GB; to download: 0.0 MB" in out
    assert main(["download", "shapes-text2img"]) == 1
    assert main(["models"]) == 0
    assert "cached and ready" in capsys.readouterr().out


def test_plan_rules_on_a_made_up_listing():
    index = {"_class_name": "X", "unet": ["diffusers", "UNet2DConditionModel"], "tokenizer": ["transformers", "T"],
             "safety_checker": ["stable_diffusion", "S"], "vae": ["diffusers", "AutoencoderKL"]}
    files = {"model_index.json": 1, "unet/config.json": 1,
             "unet/diffusion_pytorch_model-00001-of-00002.safetensors": 10,
             "unet/diffusion_pytorch_model-00002-of-00002.safetensors": 10,
             "unet/diffusion_pytorch_model.safetensors.index.json": 1,
             "unet/diffusion_pytorch_model.non_ema.safetensors": 30, "unet/diffusion_pytorch_model.fp16.safetensors": 5,
             "tokenizer/vocab.json": 1, "tokenizer/tokenizer_config.json": 1, "tokenizer/helper.py": 1,
             "safety_checker/model.safetensors": 50, "vae/config.json": 1, "vae/diffusion_pytorch_model.bin": 9}
    with pytest.raises(hub.HubError, match="only pickle weights"):
        hub.plan("r", "0" * 40, index, files)
    files["vae/diffusion_pytorch_model.fp16.safetensors"] = 4
    p = hub.plan("r", "0" * 40, index, files)
    assert set(p.files) == {"model_index.json", "unet/config.json",
                            "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
                            "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
                            "unet/diffusion_pytorch_model.safetensors.index.json", "tokenizer/vocab.json",
                            "tokenizer/tokenizer_config.json", "vae/config.json",
                            "vae/diffusion_pytorch_model.fp16.safetensors"}      # no code, no non_ema, no pickle
    assert p.variants == {"unet": None, "vae": "fp16"} and p.total_bytes == 1 + 1 + 10 + 10 + 1 + 1 + 1 + 1 + 4
    fp16 = hub.plan("r", "0" * 40, index, files, prefer_fp16=True)
    assert fp16.variants == {"unet": "fp16", "vae": "fp16"}
    assert hub.plan("r", "0" * 40, index, files, pickle_weights=True).pickles == frozenset()  # safetensors first
    del files["vae/diffusion_pytorch_model.fp16.safetensors"]
    pickled = hub.plan("r", "0" * 40, index, files, pickle_weights=True)
    assert pickled.pickles == {"vae"} and "vae/diffusion_pytorch_model.bin" in pickled.files


def test_the_sampler_dropdown_names_each_models_own_scheduler(stack, hub_mirrors):
    from ldm_core.service import Service
    from tabs.controls import sampler_choices
    ui = Service(stack)
    labels = dict((v, k) for k, v in sampler_choices(ui, HUB["gligen-1-4-generation-text-box"]))
    assert labels["Model default"] == "Model default (PNDM)" and labels["DDIM"] == "DDIM"
    assert dict((v, k) for k, v in sampler_choices(ui, CATALOG.entries["shapes-text2img"]))["Model default"] \
        == "Model default (DDPM)"
