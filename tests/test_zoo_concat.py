"""The paper's concat-conditioned zoo models (bsr_sr, inpainting_big, semantic_synthesis256/512)
from offline mirrors of their original checkpoints (ldm_core.zoo.mirror: the real configs, widths
shrunk, random weights): strict conversion and its refusals; bsr_sr against the diffusers team's own
conversion (the hub's ldm-super-resolution-4x-openimages); inpainting_big through the studio, and its
conditioning against scripts/inpaint.py's maths on the independent original forward (zoo_reference)."""
from __future__ import annotations

import json
import tomllib
from functools import partial
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import zoo_reference as ref
from diffusers import UNet2DModel, VQModel
from PIL import Image

from ldm_core import zoo
from ldm_core.__main__ import main
from ldm_core.catalog import Catalog
from ldm_core.eval.zoo_vs_hub_sr import compare, hub_spec, original_from_hub
from ldm_core.hub_mirror import write_mirror as write_hub_mirror
from ldm_core.loading import component_class
from ldm_core.pipelines.inpaint_paper import NO_PROMPT, PaperInpaintPipeline
from ldm_core.provenance import read_parameters
from ldm_core.requests import RequestError
from ldm_core.service import Service
from ldm_core.stack import ModelStack
from ldm_core.tasks.inpaint import InpaintRequest
from ldm_core.tasks.superres import SuperResRequest
from ldm_core.zoo.convert import ConversionError, convert_checkpoint, convert_state_dict
from ldm_core.zoo.download import download
from ldm_core.zoo.mirror import original_state_dict, shrunk_config, write_configs, write_mirror

torch.set_num_threads(1)
close = partial(torch.testing.assert_close, atol=2e-4, rtol=1e-4)
ROOT = Path(__file__).resolve().parent.parent
CONCAT = ["bsr_sr", "inpainting_big", "semantic_synthesis256", "semantic_synthesis512"]
SEED = 3                        # write_mirror's: model i of CONCAT gets seed SEED + i
HUB_SR = "ldm-super-resolution-4x-openimages"
REAL = {e["name"]: e for e in tomllib.loads((ROOT / "models" / "catalog.toml").read_text())["model"]}


def _toml(entries) -> str:
    return "".join("[[model]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in e.items()) + "\n" for e in entries)


def mirror_sd(name: str) -> dict:
    return original_state_dict(shrunk_config(name), SEED + CONCAT.index(name))


@pytest.fixture(scope="module")
def zoo_env(tmp_path_factory):
    """The four mirrors served from a file:// folder and downloaded (converted once) into an empty zoo."""
    root = tmp_path_factory.mktemp("zoo-concat")
    write_mirror(root / "mirror", CONCAT, seed=SEED)
    mp = pytest.MonkeyPatch()
    mp.setattr(zoo, "CONFIGS", write_configs(root / "configs", CONCAT))
    env = {"LDM_ZOO_URL": f"file://{root / 'mirror'}/", "LDM_ZOO_DIR": str(root / "converted")}
    for k, v in env.items():
        mp.setenv(k, v)
    for name in CONCAT:
        download(name, progress=lambda *_: None)
    catalog = root / "catalog.toml"
    catalog.write_text(_toml([REAL["inpainting_big"], REAL["bsr_sr"]]))
    yield catalog, env
    mp.undo()


def index_of(name: str) -> dict:
    return json.loads((zoo.converted(name) / "model_index.json").read_text())


def load(name: str, comp: str):
    library, cls = index_of(name)[comp]
    return component_class(library, cls).from_pretrained(zoo.converted(name) / comp)


# ------------------------------------------------------------------ conversion
def test_each_mirror_converts_to_its_pipeline_and_computes_the_original(zoo_env):
    expect = {"bsr_sr": ["SuperResPipeline", "UNet2DModel"], "inpainting_big": ["PaperInpaintPipeline",
              "LDMUNet2DModel"]}
    for name in CONCAT:
        index, sd, p = index_of(name), mirror_sd(name), shrunk_config(name)["model"]["params"]
        assert [index["_class_name"], index["unet"][1]] == expect.get(name, ["SemanticPipeline", "UNet2DModel"])
        assert index["vae"] == ["diffusers", "VQModel"] and index["scheduler"] == ["diffusers", "DDIMScheduler"]
        assert set(index) - {"_class_name", "_diffusers_version"} == {"vae", "unet", "scheduler"} | (
            {"rescaler"} if name.startswith("semantic") else set())
        u, first = p["unet_config"]["params"], p["first_stage_config"]["params"]
        unet, vae = load(name, "unet"), load(name, "vae")
        assert unet.config.in_channels == {"bsr_sr": 6, "inpainting_big": 7}.get(name, 6)
        x, t = torch.randn(2, u["in_channels"], 16, 16), torch.tensor([3, 800])
        with torch.no_grad():     # the sampling scripts run the EMA weights (model.ema_scope())
            close(unet(x, t).sample, ref.unet_forward(ref.ema_view(sd), u, x, t))
            close(vae.decode(x[:1, :3]).sample, ref.decode(sd, first, x[:1, :3], ref.FIRST))


def test_semantic_folders_carry_the_rescaler_with_cocostuff_labels(zoo_env):
    for name in ("semantic_synthesis256", "semantic_synthesis512"):
        assert index_of(name)["rescaler"] == ["ldm_core", "SpatialRescaler"]
        r = load(name, "rescaler")
        c = r.config
        assert (c.n_stages, c.method, c.multiplier, c.in_channels, c.out_channels, c.bias) == (
            2, "bilinear", 0.5, 182, 3, False)
        assert (c.class_names[0], c.class_names[91], c.class_names[181]) == ("person", "banner", "wood")
        assert len({tuple(rgb) for rgb in c.palette}) == 182
        w = mirror_sd(name)["cond_stage_model.channel_mapper.weight"]
        m = torch.rand(1, 182, 32, 32)
        want = F.conv2d(F.interpolate(F.interpolate(m, scale_factor=0.5, mode="bilinear"), scale_factor=0.5,
                                      mode="bilinear"), w)          # SpatialRescaler.forward, two stages, no bias
        torch.testing.assert_close(r(m), want)


def _shared_differs(sd, p):
    sd["cond_stage_model.decoder.conv_out.bias"] = sd["cond_stage_model.decoder.conv_out.bias"] + 1


REFUSALS = {   # case: (model, what is changed (checkpoint, config params), the error says)
    "shared first stage differs": ("inpainting_big", _shared_differs, "differ from first_stage_model"),
    "identity with weights": ("bsr_sr", lambda sd, p: sd.update({"cond_stage_model.w": torch.zeros(3)}), "Identity"),
    "rescaler extra key": ("semantic_synthesis256",
                           lambda sd, p: sd.update({"cond_stage_model.channel_mapper.bias": torch.zeros(3)}),
                           "unexpected .'channel_mapper.bias'"),
    "unknown stage": ("inpainting_big", lambda sd, p: p.update(cond_stage_key="segmentation"), "not supported"),
    "unet width": ("bsr_sr", None, "takes 6 .latent 3 . conditioning"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals(case):
    name, change, match = REFUSALS[case]
    cfg = shrunk_config(name)
    p = cfg["model"]["params"]
    if change is None:                  # a checkpoint that fits its config, but not the concat layout
        p["unet_config"]["params"]["in_channels"] = 7
    sd = original_state_dict(cfg, 0)
    if change is not None:
        change(sd, p)
    with pytest.raises(ConversionError, match=match):
        convert_state_dict(sd, cfg)


# ------------------------------------------------------------------ bsr_sr = the hub's diffusers copy
@pytest.fixture
def hub_and_zoo(tmp_path, monkeypatch):
    """The hub's copy mirrored (an HF cache of its own), its weights written back into the original layout
    as a Lightning .ckpt, that converted as zoo bsr_sr, and a catalog holding both entries."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    snap = write_hub_mirror(tmp_path / "hf", hub_spec(), tmp_path / "a-pickle-was-opened", scale="full")
    unet = UNet2DModel.from_pretrained(snap / "unet", variant="fp16", torch_dtype=torch.float32)
    vae = VQModel.from_pretrained(snap / "vqvae", variant="fp16", torch_dtype=torch.float32)
    ckpt, config, sd, cfg = original_from_hub(unet, vae, tmp_path / "original")
    monkeypatch.setenv("LDM_ZOO_DIR", str(tmp_path / "zoo"))
    convert_checkpoint(ckpt, config, "bsr_sr")
    (tmp_path / "catalog.toml").write_text(_toml([REAL[HUB_SR], REAL["bsr_sr"]]))
    yield Catalog.load(tmp_path / "catalog.toml"), unet, vae, sd, cfg
    assert not (tmp_path / "a-pickle-was-opened").exists()


def test_bsr_sr_gives_the_hub_copys_pixels(hub_and_zoo, tmp_path):
    catalog, hub_unet, hub_vae, sd, cfg = hub_and_zoo
    stack = ModelStack(catalog, device="cpu", output_dir=tmp_path / "out")
    hub, ours = stack.load(HUB_SR), stack.load("bsr_sr")
    for a, b in ((hub.unet, ours.unet), (hub.vae, ours.vae)):      # the same modules, the same weights
        assert type(a) is type(b) and a.state_dict().keys() == b.state_dict().keys()
        assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    low = Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 20, 3), np.uint8))
    for sampler in ("DPM++ 2M", "Euler"):                           # schedulers built from the betas alone
        a, b = (np.asarray(stack.run(SuperResRequest(image=low, model=m, steps=3, seed=5, sampler=sampler)).images[0])
                for m in (HUB_SR, "bsr_sr"))
        assert a.shape == (48, 80, 3) and np.array_equal(a, b), sampler
    # DDIM: the hub's copy says set_alpha_to_one=True; CompVis' DDIM sampler (ddim.py make_schedule) takes
    # alphas_cumprod[0] at the last step, as the converted schedule does. Same pixels once they agree:
    assert hub.published_scheduler_config["set_alpha_to_one"]
    assert not ours.published_scheduler_config["set_alpha_to_one"]
    ours.published_scheduler_config = dict(hub.published_scheduler_config)
    a, b = (np.asarray(p(low, num_inference_steps=3, seeds=[5], sampler="DDIM").images[0]) for p in (hub, ours))
    assert np.array_equal(a, b)
    # the original-layout checkpoint computes the hub's outputs by the independent original forward
    p = cfg["model"]["params"]
    x, t = torch.randn(2, 6, 16, 16), torch.tensor([4, 600])
    with torch.no_grad():
        close(hub_unet(x, t).sample, ref.unet_forward(sd, p["unet_config"]["params"], x, t))
        first, img, z = p["first_stage_config"]["params"], torch.rand(1, 3, 32, 32) * 2 - 1, torch.randn(1, 3, 8, 8)
        close(hub_vae.encode(img).latents, ref.encode(sd, first, img, ref.FIRST))
        close(hub_vae.decode(z).sample, ref.decode(sd, first, z, ref.FIRST))
    report = compare(steps=2, side=16, catalog=catalog.path, out=tmp_path / "eval")   # the online command's code
    assert report["equal"] and report["studio_max_pixel_diff"] == 0


# ------------------------------------------------------------------ inpainting_big in the studio
def scene(w: int, h: int) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    return Image.fromarray(np.stack([x * 255 // w, y * 255 // h, (x + y) % 256], -1).astype(np.uint8))


def box_mask(w: int, h: int) -> Image.Image:
    m = Image.new("L", (w, h), 0)
    m.paste(255, (w // 4, h // 4, w // 2, h // 2))
    return m


@pytest.fixture(scope="module")
def service(zoo_env, tmp_path_factory):
    catalog, _ = zoo_env
    return Service(ModelStack(Catalog.load(catalog), device="cpu", output_dir=tmp_path_factory.mktemp("out")))


def test_inpainting_big_through_the_service(service):
    run = lambda **kw: service.run(InpaintRequest(model="inpainting_big", steps=2, seed=4, **kw))   # noqa: E731
    for w, h in ((256, 256), (200, 120)):                     # native, and sides no multiple of 32
        img, m = scene(w, h), box_mask(w, h)
        hard, soft = (np.asarray(run(image=img, mask=m, mask_blur=b).images[0], dtype=int) for b in (0, 4))
        keep = np.asarray(m) == 0
        assert hard.shape == (h, w, 3) and np.array_equal(hard[keep], np.asarray(img)[keep])
        assert np.array_equal(soft[keep], hard[keep]) and np.abs(hard[~keep] - soft[~keep]).max() > 0
    r = run(image=img, mask=m, keep_unmasked=False)
    decoded = np.asarray(r.images[0], dtype=int)
    assert r.info["keep_unmasked"] is False and np.abs(decoded[keep] - np.asarray(img)[keep]).max() > 0
    r = run(image=img, extend_right=24, extend_top=8, prompt="a red roof")        # outpainting, a prompt
    out = np.asarray(r.images[0])
    assert out.shape == (128, 224, 3) and np.array_equal(out[8:, :200], np.asarray(img))
    assert r.info["warnings"] == [NO_PROMPT] and r.info["steps"] == 2
    with pytest.raises(RequestError, match="set guidance to 1"):
        run(image=img, mask=m, guidance_scale=3.0)


def test_inpainting_big_from_the_command_line(zoo_env, tmp_path, capsys):
    catalog, _ = zoo_env
    scene(96, 64).save(tmp_path / "img.png"), box_mask(96, 64).save(tmp_path / "mask.png")
    assert main(["--models", str(catalog), "--device", "cpu", "--outdir", str(tmp_path / "out"), "inpaint",
                 str(tmp_path / "img.png"), str(tmp_path / "mask.png"), "--model", "inpainting_big", "--steps", "2",
                 "--extend-bottom", "8", "--mask-blur", "3"]) == 0
    path = next(p for p in capsys.readouterr().out.split() if p.endswith(".png"))
    params = read_parameters(path)
    assert params["model"] == "inpainting_big" and params["mask_blur"] == 3 and Image.open(path).size == (96, 72)


@pytest.mark.slow                 # the studio's start in a subprocess: ~20-30 s on 2 busy cores
def test_inpainting_big_over_the_http_api(zoo_env, tmp_path):
    from gradio_client import Client, handle_file
    from servers import webui
    catalog, env = zoo_env
    scene(72, 40).save(tmp_path / "img.png"), box_mask(72, 40).save(tmp_path / "mask.png")
    with webui(catalog, tmp_path / "out", "--offline", env=env) as server:
        images, info = Client(server.url, verbose=False).predict(
            image=handle_file(str(tmp_path / "img.png")), mask=handle_file(str(tmp_path / "mask.png")),
            model="inpainting_big", steps=2, seed=1, mask_blur=0, api_name="/inpaint")
    info, out = json.loads(info), np.asarray(Image.open(images[0]["image"]).convert("RGB"))
    keep = np.asarray(box_mask(72, 40)) == 0
    assert info["model"] == "inpainting_big" and info["guidance_scale"] == 1.0 and out.shape == (40, 72, 3)
    # outside the mask: the input, up to the saved PNG's invisible watermark (ldm_core.watermark)
    assert np.abs(out[keep].astype(int) - np.asarray(scene(72, 40))[keep]).mean() < 2


def script_inpaint(sd: dict, p: dict, image: Image.Image, mask: Image.Image, steps: int, seed: int):
    """scripts/inpaint.py on the original weights (zoo_reference): make_batch, c = cat(encode(masked),
    interpolate(mask)), DDIM (ddim.py: timesteps range(0, 1000, 1000 // S) + 1, alpha_prev of the
    last step alphas_cumprod[0], eta 0) on cat([x, c]), decode, (1 - mask) * image + mask * predicted."""
    u, first = p["unet_config"]["params"], p["first_stage_config"]["params"]
    img = torch.from_numpy(np.asarray(image, np.float32) / 255).permute(2, 0, 1)[None]
    m = (torch.from_numpy(np.asarray(mask, np.float32) / 255)[None, None] >= 0.5).float()
    image_, mask_, masked = img * 2 - 1, m * 2 - 1, (1 - m) * img * 2 - 1
    c = ref.encode(sd, first, masked, ref.FIRST)
    c = torch.cat([c, F.interpolate(mask_, size=c.shape[-2:])], 1)
    ac = sd["alphas_cumprod"].double()
    ts = [t + 1 for t in range(0, 1000, 1000 // steps)]
    prev = [ac[0]] + [ac[t] for t in ts[:-1]]
    x = torch.randn((1, 3, *c.shape[-2:]), generator=torch.Generator().manual_seed(seed))
    for i in reversed(range(steps)):
        e = ref.unet_forward(sd, u, torch.cat([x, c], 1), torch.tensor([ts[i]])).double()
        a, ap = ac[ts[i]], prev[i]
        x0 = (x - (1 - a).sqrt() * e) / a.sqrt()                  # eta 0
        x = (ap.sqrt() * x0 + (1 - ap).sqrt() * e).float()
    predicted = torch.clamp((ref.decode(sd, first, x, ref.FIRST) + 1) / 2, 0, 1)
    inpainted = (1 - (mask_ + 1) / 2) * torch.clamp((image_ + 1) / 2, 0, 1) + (mask_ + 1) / 2 * predicted
    return x, predicted, inpainted


def test_paper_inpaint_conditioning_is_the_scripts(zoo_env):
    sd, p = ref.ema_view(mirror_sd("inpainting_big")), shrunk_config("inpainting_big")["model"]["params"]
    pipe = PaperInpaintPipeline(*(load("inpainting_big", c) for c in ("vae", "unet", "scheduler")))
    img, m = scene(64, 32), box_mask(64, 32)
    with torch.no_grad():
        x, predicted, inpainted = script_inpaint(sd, p, img, m, steps=3, seed=7)
    kw = dict(num_inference_steps=3, seeds=[7], sampler="DDIM", mask_downsampling="nearest")
    latents = pipe(img, m, output_type="latent", **kw).images
    close(latents, x)
    to8 = lambda t: (t[0].permute(1, 2, 0).numpy() * 255).astype(int)            # noqa: E731
    got = np.asarray(pipe(img, m, keep_unmasked=False, **kw).images[0], dtype=int)
    assert np.abs(got - to8(predicted)).max() <= 1                                 # decoded, quantised
    got = np.asarray(pipe(img, m, mask_blur=0, **kw).images[0], dtype=int)
    assert np.abs(got - to8(inpainted)).max() <= 1                                 # the script's composite
