"""The resident stack: load once, share components, evict LRU, clear load errors."""
import shutil

import pytest

from ldm_core.catalog import Catalog
from ldm_core.stack import ModelLoadError, ModelStack
from ldm_core.tasks.text2img import Text2ImgRequest


def test_loaded_once_and_shared_components_held_once(tiny_catalog, tmp_path):
    s = ModelStack.from_catalog(tiny_catalog, device="cpu", output_dir=tmp_path)
    a = s.load("tiny-text2img")
    assert s.load("tiny-text2img") is a                       # resident: not loaded again
    b = s.load("tiny-layout2img")
    assert a.vae is b.vae                                     # the shared autoencoder is one object
    assert s.load("tiny-inpaint").vae is a.vae
    before = s.resident_bytes()
    s.load("tiny-text2img")
    assert s.resident_bytes() == before


def test_memory_budget_evicts_least_recently_used(tiny_catalog, tmp_path):
    probe = ModelStack.from_catalog(tiny_catalog, device="cpu")
    probe.load("tiny-compvis-text2im")
    one = probe.resident_bytes()
    s = ModelStack.from_catalog(tiny_catalog, device="cpu", memory_budget_gb=1.5 * one / 2 ** 30)
    s.load("tiny-compvis-text2im")
    s.load("tiny-sd-inpaint")                                  # over budget: the older one goes
    assert list(s._resident) == ["tiny-sd-inpaint"]
    assert s.resident_bytes() <= 1.5 * one
    assert s.run(Text2ImgRequest(prompt="a", model="tiny-compvis-text2im")).images  # reloads on demand


def test_missing_and_corrupt_models_give_clear_errors(tiny_catalog, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(tiny_catalog.parent, root)
    (root / "tiny-text2img" / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"garbage")
    shutil.rmtree(root / "tiny-layout2img")
    s = ModelStack.from_catalog(root / "catalog.toml", device="cpu")
    with pytest.raises(ModelLoadError, match="tiny-text2img|unet"):
        s.load("tiny-text2img")
    with pytest.raises(ModelLoadError, match="no model_index.json"):
        s.load("tiny-layout2img")
    assert s.load("tiny-inpaint") is not None                  # the other models keep working
    assert not any("tiny-text2img" in k for k in s._components)  # nothing half-loaded stays


def test_pickle_weights_are_never_loaded(tiny_catalog, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(tiny_catalog.parent, root)
    unet = root / "tiny-compvis-text2im" / "unet"
    (unet / "diffusion_pytorch_model.safetensors").rename(unet / "diffusion_pytorch_model.bin")
    s = ModelStack.from_catalog(root / "catalog.toml", device="cpu")
    with pytest.raises(ModelLoadError):
        s.load("tiny-compvis-text2im")


def test_describe_is_honest_about_attention_slicing(tiny_catalog):
    auto = ModelStack.from_catalog(tiny_catalog, device="cpu").describe()
    assert auto["device"] == "cpu" and auto["attention_slicing"].startswith("off")
    on = ModelStack.from_catalog(tiny_catalog, device="cpu", attention_slicing="on")
    pipe = on.load("tiny-text2img")
    assert "on" in on.describe()["attention_slicing"]
    procs = {type(p).__name__ for p in pipe.unet.attn_processors.values()}
    assert procs == {"SlicedAttnProcessor"}


def test_catalog_lists_the_papers_checkpoints():
    c = Catalog.load()
    sources = {e.source for e in c.entries.values()}
    assert {"hub:CompVis/ldm-text2im-large-256", "hub:CompVis/ldm-super-resolution-4x-openimages"} <= sources
    assert any("gligen" in s.lower() for s in sources) and any("inpainting" in s for s in sources)
    for task in ("text2img", "layout2img", "superres", "inpaint"):
        assert not c.default(task).is_hub                    # every tab defaults to a built-in model


def test_catalog_rejects_a_superres_average_below_one(tmp_path):
    from ldm_core.catalog import CatalogError
    cat = tmp_path / "c.toml"
    cat.write_text('[[model]]\nname = "sr"\ntask = "superres"\nsource = "x"\npipeline = "SuperResPipeline"\n'
                   'average = 0\n')
    with pytest.raises(CatalogError, match="average"):
        Catalog.load(cat)


def test_a_relative_catalog_path_finds_its_models(monkeypatch):
    from ldm_core.catalog import MODELS_DIR
    monkeypatch.chdir(MODELS_DIR.parent)
    c = Catalog.load("models/catalog.toml")                  # as `python webui.py --models models/catalog.toml`
    assert c.availability(c.entries["shapes-text2img"]) == (True, "built-in")
