"""The paper's BERT-conditioned checkpoints (ldm_core.zoo.bert): txt2img-large, text2img256 and
layout2img-openimages256, from offline mirrors (the original x-transformers key layout, the real
configs with widths shrunk, random weights):

1. each converts strictly; the converted LDMBertModel == an independent forward of the original
   BERTEmbedder (tests/zoo_reference.py), and the UNet (txt2img-large's: `legacy: False`; the others'
   EMA copy) == the original UNet on that context; at full size, text encoder and UNet have the hub
   copy's parameter counts;
2. a wrong or extra key, a wrong shape, an unknown parameter, a width that is not the UNet's
   context, or no tokenizer to be had: refused, naming what is wrong;
3. layout2img converts into a PaperLayoutPipeline folder (vae, text_encoder, unet, scheduler);
4. the hub's diffusers copy of txt2img-large (ldm-text2im-large-256's published configs, widths
   shrunk), written back into the original layout, == the original network's forward (reference),
   and converted by us gives the studio the same pixels as the hub entry (`python -m ldm_core.eval
   zoo-vs-hub txt2img-large`, against the mirrors);
5. text2img256 and txt2img-large through the CLI and the Service, native and awkward sizes; bad sizes
   refused; and through the HTTP API (marked slow: a server start).
"""
from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import constants
from PIL import Image

import zoo_reference as ref
from ldm_core import zoo
from ldm_core.__main__ import main
from ldm_core.eval.__main__ import main as eval_main
from ldm_core.hub_mirror import LDM_TEXT2IM
from ldm_core.loading import component_class, load_component
from ldm_core.requests import RequestError
from ldm_core.service import Service
from ldm_core.stack import ModelStack
from ldm_core.tasks.text2img import Text2ImgRequest
from ldm_core.zoo import ZOO, bert
from ldm_core.zoo.convert import ConversionError, convert_state_dict, convert_unet, read_config
from ldm_core.zoo.mirror import original_state_dict, shrunk_config, write_configs, write_lightning_ckpt, write_mirror
from ldm_core.zoo.bert import convert_bert, unet_node
from ldm_core.zoo.mirror_bert import bert_keys, original_from_hub, write_hub_text2im
from ldm_core.zoo.mirror_keys import Weights, unet_keys

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["txt2img-large", "text2img256", "layout2img-openimages256"]
TEXT = ["txt2img-large", "text2img256"]
HUB = "ldm-text2im-large-256"
CONFIGS = {n: shrunk_config(n) for n in NAMES}       # before any fixture points zoo.CONFIGS elsewhere
T = "cond_stage_model.transformer."
torch.set_num_threads(1)


def close(a, b, atol=1e-4):
    assert a.shape == b.shape, (a.shape, b.shape)
    assert (a - b).abs().max().item() < atol * max(1.0, b.abs().max().item())


def sd_of(name: str) -> dict:
    return original_state_dict(CONFIGS[name], seed=NAMES.index(name))


def bert_p(name: str) -> dict:
    return bert.bert_params(CONFIGS[name]["model"]["params"]["cond_stage_config"])


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A Hugging Face cache holding the hub copy of txt2img-large (its tokenizer too: conversions
    read it there); a zoo mirror: text2img256 and layout2img from write_mirror, txt2img-large from
    the hub copy's weights in the original layout; the shrunk configs; a catalog of the real entries."""
    root = tmp_path_factory.mktemp("zoo-text")
    mp = pytest.MonkeyPatch()
    marker = root / "a-pickle-was-opened"
    snapshot = write_hub_text2im(root / "hf", marker, CONFIGS["txt2img-large"])
    mp.setattr(constants, "HF_HUB_CACHE", str(root / "hf"))
    mp.setenv("HF_HUB_CACHE", str(root / "hf"))
    write_mirror(root / "mirror", NAMES[1:], seed=3)
    large = CONFIGS["txt2img-large"]
    sd = original_from_hub(snapshot, large, original_state_dict(large))
    write_lightning_ckpt(root / "mirror" / ZOO["txt2img-large"].file, sd, global_step=390_000, epoch=3)
    mp.setattr(zoo, "CONFIGS", write_configs(root / "configs", NAMES))
    mp.setenv("LDM_ZOO_URL", f"file://{root / 'mirror'}/")
    mp.setenv("LDM_ZOO_DIR", str(root / "converted"))
    real = tomllib.loads((ROOT / "models" / "catalog.toml").read_text())["model"]
    entries = {e["name"]: e for e in real if e["name"] in TEXT + [HUB]}
    catalog = root / "catalog.toml"
    catalog.write_text("".join("[[model]]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in e.items()) + "\n"
                               for e in entries.values()))
    yield {"root": root, "snapshot": snapshot, "sd": sd, "catalog": catalog, "marker": marker, "entries": entries}
    mp.undo()


# ------------------------------------------------------------------ 1. conversion == the original forward
@pytest.mark.parametrize("name", NAMES)
def test_mirrors_convert_strictly_and_match_the_original_forward(name, env):
    cfg, sd = CONFIGS[name], sd_of(name)
    p = bert_p(name)
    assert sum(k.startswith(T) for k in sd) == 6 + 13 * p["n_layer"]     # embeddings, norm, logits; 13 per layer
    assert sd[T + "token_emb.weight"].shape == (p["vocab_size"], p["n_embed"])
    assert sd[T + "pos_emb.emb.weight"].shape == (p["max_seq_len"], p["n_embed"])
    conv = convert_state_dict(sd, cfg)
    assert conv.pipeline == ("PaperLayoutPipeline" if name.startswith("layout") else "Text2ImgPipeline")
    assert (conv.tokenizer is None) == name.startswith("layout")
    tokens = torch.randint(0, p["vocab_size"], (2, p["max_seq_len"]), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        context = conv.text_encoder(tokens)[0]
        close(context, ref.bert_forward(sd, p["n_layer"], tokens))
        u = cfg["model"]["params"]["unet_config"]["params"]    # txt2img-large: legacy False, 8 heads, no EMA
        x = torch.randn(2, u["in_channels"], 16, 16, generator=torch.Generator().manual_seed(2))
        t = torch.tensor([5, 900])
        close(conv.unet(x, t, encoder_hidden_states=context).sample,
              ref.unet_forward(ref.ema_view(sd) if conv.ema else sd, u, x, t, context))
    assert conv.ema == (name != "txt2img-large")
    if name == "txt2img-large":
        assert conv.vae.config.scaling_factor == pytest.approx(0.18215)
    if conv.tokenizer is not None:               # bert-base-uncased's ids: [CLS] ... [SEP] [PAD]..., 77 read
        ids = conv.tokenizer("A Cat", padding="max_length", max_length=77).input_ids
        assert ids[0] == 101 and ids[3] == 102 and ids[4:] == [0] * 73 and conv.tokenizer.model_max_length == 77


def test_full_size_txt2img_large_has_the_hub_copys_parameters():
    """txt2img-1p4B at its real size (shapes only): its BERTEmbedder (1280 wide, 32 layers) as
    LDMBertModel has 582.5M parameters, the hub copy's bert/pytorch_model.bin (2.33 GB of fp32), and
    its UNet (legacy: False) 872M, the hub copy's unet .bin (3.49 GB)."""
    params = read_config(ROOT / "ldm_core/zoo/configs/txt2img-large.yaml")["model"]["params"]
    w = MetaWeights(0)
    bert_keys(w, params)                        # every original key at its real shape, on the meta device
    with torch.device("meta"):
        model = convert_bert({k[len("cond_stage_model."):]: v for k, v in w.sd.items()}, params["cond_stage_config"],
                             params["unet_config"]["params"]["context_dim"])
    n = sum(t.numel() for t in model.parameters())
    assert abs(4 * n - LDM_TEXT2IM.files["bert/pytorch_model.bin"]) < 0.005 * 4 * n
    assert len(w.sd) == 6 + 13 * 32 and model.config.d_model == 1280
    w = MetaWeights(0)
    unet_keys(w, "", params["unet_config"]["params"])
    with torch.device("meta"):
        unet = convert_unet(w.sd, unet_node(params["unet_config"]))
    n = sum(t.numel() for t in unet.parameters())
    assert abs(4 * n - LDM_TEXT2IM.files["unet/diffusion_pytorch_model.bin"]) < 0.005 * 4 * n


class MetaWeights(Weights):
    def randn(self, *shape):
        return torch.empty(*shape, device="meta")


# ------------------------------------------------------------------ 2. refusals
def _refused(sd, cfg, match):
    with pytest.raises(ConversionError, match=match):
        convert_state_dict(sd, cfg)


def test_wrong_keys_shapes_and_params_are_refused(env):
    cfg, sd = CONFIGS["txt2img-large"], sd_of("txt2img-large")
    ff = T + "attn_layers.layers.1.1.net.0.0.weight"
    renamed = {(k.replace("net.0.0", "net.0") if k == ff else k): v for k, v in sd.items()}
    _refused(renamed, cfg, r"keys this converter does not know.*net\.0\.weight")
    _refused({**sd, T + "memory_tokens": torch.zeros(2, 32)}, cfg, "memory_tokens")
    _refused({k: v for k, v in sd.items() if k != T + "to_logits.bias"}, cfg, r"missing \['to_logits.bias'\]")
    _refused({**sd, ff: torch.zeros(64, 32)}, cfg, r"shape mismatches.*fc1.weight \(64, 32\) != \(128, 32\)")
    _refused({**sd, T + "attn_layers.layers.0.1.to_q.weight": torch.zeros(256, 32)}, cfg, "8 heads x 64")
    extra = json.loads(json.dumps(cfg))
    extra["model"]["params"]["cond_stage_config"]["params"]["attn_heads"] = 12
    _refused(sd, extra, r"BERTEmbedder parameters \['attn_heads'\] are not supported")
    wide = json.loads(json.dumps(cfg))
    wide["model"]["params"]["cond_stage_config"]["params"]["n_embed"] = 64
    _refused(sd, wide, "context_dim 32 != the BERTEmbedder's n_embed 64")


def test_no_tokenizer_offline_is_refused(env, monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    _refused(sd_of("text2img256"), CONFIGS["text2img256"], "BERT tokenizer .* needed once, to convert: this "
                                                           "machine is offline")
    assert convert_state_dict(sd_of("layout2img-openimages256"), CONFIGS["layout2img-openimages256"]).tokenizer is None


# ------------------------------------------------------------------ 3. the layout folder
def test_layout_converts_into_the_paper_layout_folder(env):
    assert main(["--models", str(env["catalog"]), "download", "layout2img-openimages256"]) == 0
    folder = zoo.converted("layout2img-openimages256")
    index = json.loads((folder / "model_index.json").read_text())
    assert {k: v for k, v in index.items() if k != "_diffusers_version"} == {
        "_class_name": "PaperLayoutPipeline", "vae": ["diffusers", "VQModel"],
        "text_encoder": ["diffusers", "LDMBertModel"], "unet": ["diffusers", "UNet2DConditionModel"],
        "scheduler": ["diffusers", "DDIMScheduler"]}
    assert sorted(p.name for p in folder.iterdir()) == ["model_index.json", "scheduler", "source.json",
                                                        "text_encoder", "unet", "vae"]
    encoder = load_component(component_class(*index["text_encoder"]), folder, "text_encoder", torch.float32)
    assert (encoder.config.vocab_size, encoder.config.max_position_embeddings) == (8192, 92)
    assert list((folder / "text_encoder").glob("*.safetensors"))


# ------------------------------------------------------------------ 4. against the hub's diffusers copy
def test_the_hub_copy_in_the_original_layout_is_the_original_network(env):
    """What original_from_hub writes runs, as the ORIGINAL network (reference), as the hub modules do:
    the inverse mapping is checked independently of the converter."""
    snap, sd, cfg = env["snapshot"], env["sd"], CONFIGS["txt2img-large"]["model"]["params"]
    load = {c: load_component(component_class(*LDM_TEXT2IM.configs["model_index.json"][c]), snap, c, torch.float32,
                              pickled=True) for c in ("bert", "unet", "vqvae")}
    ids = torch.randint(0, 30522, (2, 77), generator=torch.Generator().manual_seed(3))
    x, t = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(4)), torch.tensor([17, 640])
    with torch.no_grad():
        context = load["bert"](ids)[0]
        close(context, ref.bert_forward(sd, bert_p("txt2img-large")["n_layer"], ids))
        close(load["unet"](x, t, encoder_hidden_states=context).sample,
              ref.unet_forward(sd, cfg["unet_config"]["params"], x, t, context))
        close(load["vqvae"].decode(x[:1, :, :8, :8]).sample,
              ref.decode(sd, cfg["first_stage_config"]["params"], x[:1, :, :8, :8], prefix="first_stage_model."))
    assert not env["marker"].exists()


def test_converted_txt2img_large_gives_the_hub_copys_pixels(env, tmp_path, capsys):
    assert main(["--models", str(env["catalog"]), "download", "txt2img-large"]) == 0
    folder = zoo.converted("txt2img-large")
    index = json.loads((folder / "model_index.json").read_text())
    hub = LDM_TEXT2IM.configs["model_index.json"]     # the same classes, under Text2ImgPipeline's own names
    assert index["vae"][1] == hub["vqvae"][1] and index["text_encoder"][1] == hub["bert"][1]
    assert index["unet"] == hub["unet"] and index["scheduler"] == hub["scheduler"]
    assert index["tokenizer"] == ["transformers", "BertTokenizer"] and index["_class_name"] == "Text2ImgPipeline"
    eval_main(["zoo-vs-hub", "txt2img-large", "--catalog", str(env["catalog"]), "--steps", "2", "--seeds", "7",
               "--size", "128", "96", "--device", "cpu", "--out", str(tmp_path)])
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["ok"] and res["runs"][0]["max_abs_diff"] == 0 and res["runs"][0]["size"] == [96, 128]
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (192, 128, 3) and grid.std() > 5                  # zoo row, hub row: an image, not flat
    assert "the same pixels" in capsys.readouterr().out
    assert not env["marker"].exists()


# ------------------------------------------------------------------ 5. the studio, native and awkward sizes
@pytest.mark.parametrize("name", TEXT)
def test_cli_and_service_generate_at_native_and_awkward_sizes(name, env, tmp_path, capsys):
    catalog = env["catalog"]
    assert main(["--models", str(catalog), "download", name]) == 0
    entry = env["entries"][name]
    args = ["--models", str(catalog), "--device", "cpu", "--outdir", str(tmp_path), "text2img", "a red circle",
            "--model", name, "--steps", "2", "--seed", "3"]                  # the native size: the entry's
    assert main(args) == 0, capsys.readouterr().err
    path = [p for p in capsys.readouterr().out.split() if p.endswith(".png")][-1]
    assert Image.open(path).size == (entry["width"], entry["height"]) == (256, 256)
    service = Service(ModelStack.from_catalog(catalog, device="cpu", output_dir=tmp_path))
    # an awkward size: 192x320 is 3x5 at the deepest UNet level (f x 2^3 = 32 / 64 px a cell)
    paths, info = service.generate(Text2ImgRequest(prompt="a blue square", model=name, steps=2, seed=1,
                                                   width=192, height=320))
    assert Image.open(paths[0]).size == (192, 320) and info["model"] == name
    assert info["guidance_scale"] == entry["guidance"] and info["sampler"] == "DDIM"
    with pytest.raises(RequestError, match="width must be a multiple of 8, got 250"):
        service.generate(Text2ImgRequest(prompt="a cat", model=name, steps=1, width=250, height=256))


@pytest.mark.slow                 # the studio's start in a subprocess: ~20-40 s on 2 busy cores
def test_the_api_generates_with_both_text_models(env, tiny_catalog, tmp_path):
    """The HTTP API (gradio_client, as tabs/api.py documents it) on the converted folders, offline."""
    from gradio_client import Client
    from servers import webui
    for name in TEXT:
        assert main(["--models", str(env["catalog"]), "download", name]) == 0      # converted once, offline after
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(f'root = "{tiny_catalog.parent}"\n' + tiny_catalog.read_text() + env["catalog"].read_text())
    server_env = {"LDM_ZOO_DIR": str(env["root"] / "converted"), "HF_HUB_CACHE": str(env["root"] / "hf")}
    with webui(catalog, tmp_path / "out", "--offline", env=server_env) as server:
        client = Client(server.url, verbose=False)
        for name, (w, h) in (("txt2img-large", (192, 320)), ("text2img256", (256, 256))):
            images, info = client.predict(prompt="a red circle", model=name, steps=2, width=w, height=h, seed=1,
                                          guidance_scale=4.5, api_name="/text2img")
            info = json.loads(info)
            assert info["model"] == name and Image.open(images[0]["image"]).size == (w, h)
            assert info["guidance_scale"] == 4.5
