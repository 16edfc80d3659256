"""Offline stand-ins for the paper's BERT-conditioned checkpoints (txt2img-large, text2img256,
layout2img-openimages256), and the hub's diffusers copy of txt2img-large written back into the
ORIGINAL layout (tools: tests and ldm_core.eval.zoo_vs_hub).

Facts are from CompVis/latent-diffusion@a506df5 (read, not copied):
  - ldm/modules/encoders/modules.py BERTEmbedder: `transformer` = x_transformer.TransformerWrapper
    (num_tokens=vocab_size, max_seq_len, Encoder(dim=n_embed, depth=n_layer));
  - ldm/modules/x_transformer.py: TransformerWrapper registers token_emb, pos_emb.emb, attn_layers,
    norm, to_logits (in that order; project_emb is an Identity, memory tokens none); AttentionLayers
    one ModuleList[norm, block, Residual] per layer, ('a', 'f') * depth; Attention to_q/to_k/to_v
    (dim -> 8 heads x 64, no bias), to_out; FeedForward net.0.0 (dim -> 4 dim), net.2.
The hub copy: CompVis/ldm-text2im-large-256 (ldm_core.hub_mirror's LDM_TEXT2IM: vqvae AutoencoderKL,
bert LDMBertModel, unet UNet2DConditionModel), whose configs here are the published ones with only
the widths of `shrunk_config("txt2img-large")`, so its weights have an original layout.

`bert_to_original` is written from x_transformer.py's names, apart from ldm_core.zoo.bert's table;
the UNet and autoencoder go back through mirror_concat.original_from_diffusers, the inverse of the
converter's own tables: tests check what it writes against tests/zoo_reference.py's forward.
"""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from ..hub_mirror import LDM_TEXT2IM, write_mirror
from ..hub_mirror import writers as hub_writers
from .bert import BERT_EMBEDDER, DIM_HEAD, FF_MULT, HEADS, bert_params, unet_node
from .mirror_concat import original_from_diffusers
from .mirror_keys import Weights

PREFIX = "cond_stage_model.transformer."


def is_bert(cond) -> bool:
    return isinstance(cond, dict) and cond.get("target") == BERT_EMBEDDER


def shrink_bert(params: dict, context: int) -> None:
    """A LatentDiffusion's BERTEmbedder (`params["cond_stage_config"]`) at width `context` (the UNet's
    context_dim); n_layer, vocab_size, max_seq_len and use_tokenizer are kept."""
    params["cond_stage_config"].setdefault("params", {})["n_embed"] = context


def bert_keys(w: Weights, params: dict) -> None:
    """`cond_stage_model.transformer.*` of a LatentDiffusion's BERTEmbedder, original names and order."""
    p = bert_params(params["cond_stage_config"])
    d, inner = p["n_embed"], HEADS * DIM_HEAD
    w.sd[PREFIX + "token_emb.weight"] = w.randn(p["vocab_size"], d)
    w.sd[PREFIX + "pos_emb.emb.weight"] = 0.5 * w.randn(p["max_seq_len"], d)
    for i in range(p["n_layer"]):
        a, f = f"{PREFIX}attn_layers.layers.{2 * i}", f"{PREFIX}attn_layers.layers.{2 * i + 1}"
        w.norm(a + ".0", d)
        for x in "qkv":
            w.linear(f"{a}.1.to_{x}", d, inner, bias=False)
        w.linear(a + ".1.to_out", inner, d)
        w.norm(f + ".0", d)
        w.linear(f + ".1.net.0.0", d, FF_MULT * d)
        w.linear(f + ".1.net.2", FF_MULT * d, d)
    w.norm(PREFIX + "norm", d)
    w.linear(PREFIX + "to_logits", d, p["vocab_size"])


def bert_to_original(bert_sd: dict, n_layer: int) -> dict[str, torch.Tensor]:
    """An LDMBertModel state dict under BERTEmbedder's original names (x_transformer.py)."""
    out = {PREFIX + "token_emb.weight": bert_sd["model.embed_tokens.weight"],
           PREFIX + "pos_emb.emb.weight": bert_sd["model.embed_positions.weight"]}
    for i in range(n_layer):
        src = f"model.layers.{i}."
        attn, ff = f"{PREFIX}attn_layers.layers.{2 * i}.", f"{PREFIX}attn_layers.layers.{2 * i + 1}."
        for name, key in (("0", "self_attn_layer_norm"), ("1.to_q", "self_attn.q_proj"), ("1.to_k", "self_attn.k_proj"),
                          ("1.to_v", "self_attn.v_proj"), ("1.to_out", "self_attn.out_proj")):
            for param in ("weight", "bias"):
                if src + f"{key}.{param}" in bert_sd:
                    out[attn + f"{name}.{param}"] = bert_sd[src + f"{key}.{param}"]
        for name, key in (("0", "final_layer_norm"), ("1.net.0.0", "fc1"), ("1.net.2", "fc2")):
            for param in ("weight", "bias"):
                out[ff + f"{name}.{param}"] = bert_sd[src + f"{key}.{param}"]
    for param in ("weight", "bias"):
        out[PREFIX + f"norm.{param}"] = bert_sd[f"model.layer_norm.{param}"]
        out[PREFIX + f"to_logits.{param}"] = bert_sd[f"to_logits.{param}"]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


# ------------------------------------------------------------------ the hub copy of txt2img-large
def hub_text2im_spec(config: dict):
    """LDM_TEXT2IM with its published configs at the widths of `config` (shrunk txt2img-large):
    UNet block_out_channels / cross_attention_dim, vqvae block_out_channels, LDMBert d_model / ffn;
    everything else (32 layers, heads, head_dim, 77 positions, vocab 30522, scaling_factor) as published."""
    p = config["model"]["params"]
    unet, dd = p["unet_config"]["params"], p["first_stage_config"]["params"]["ddconfig"]
    bert = bert_params(p["cond_stage_config"])
    c = dict(LDM_TEXT2IM.configs)
    c["unet/config.json"] = {**c["unet/config.json"], "cross_attention_dim": unet["context_dim"],
                             "block_out_channels": [unet["model_channels"] * m for m in unet["channel_mult"]]}
    c["vqvae/config.json"] = {**c["vqvae/config.json"], "block_out_channels": [dd["ch"] * m for m in dd["ch_mult"]]}
    c["bert/config.json"] = {**c["bert/config.json"], "d_model": bert["n_embed"],
                             "encoder_ffn_dim": FF_MULT * bert["n_embed"], "encoder_layers": bert["n_layer"],
                             "num_hidden_layers": bert["n_layer"]}
    return dataclasses.replace(LDM_TEXT2IM, configs=c)


@contextlib.contextmanager
def _perturbed_weights(seed: int):
    """While inside, the hub mirror's random models get every 1-d tensor (norms, biases) moved by
    N(0, 0.1²): diffusers initialises them to 1 and 0, which would hide a swapped norm or bias."""
    make, gen = hub_writers._model, torch.Generator().manual_seed(seed)

    def model(class_name, config):
        m = make(class_name, config)
        with torch.no_grad():
            for t in m.state_dict().values():
                if t.is_floating_point() and t.ndim == 1:
                    t.add_(0.1 * torch.randn(t.shape, generator=gen))
        return m
    hub_writers._model = model
    try:
        yield
    finally:
        hub_writers._model = make


def write_hub_text2im(cache_dir, marker, config: dict, seed: int = 0) -> Path:
    """The hub copy of txt2img-large at `config`'s widths, laid out in the Hugging Face cache at
    `cache_dir` (ldm_core.hub_mirror.write_mirror); returns its snapshot folder."""
    with _perturbed_weights(seed):
        return write_mirror(cache_dir, hub_text2im_spec(config), marker, scale="full")


def original_from_hub(snapshot, config: dict, template: dict) -> dict[str, torch.Tensor]:
    """The hub snapshot's weights as the original txt2img-large state dict for `config`; `template`:
    its original keys (ldm_core.zoo.mirror.original_state_dict), whose schedule buffers are kept."""
    snapshot = Path(snapshot)
    unet = UNet2DConditionModel.from_pretrained(snapshot / "unet", use_safetensors=False)
    vae = AutoencoderKL.from_pretrained(snapshot / "vqvae", use_safetensors=False)
    p = config["model"]["params"]
    legacy = {**config, "model": {**config["model"], "params": {**p, "unet_config": unet_node(p["unet_config"])}}}
    sd = {k: v for k, v in original_from_diffusers(unet, vae, legacy, template).items()
          if not k.startswith("cond_stage_model.")}
    bert_sd = torch.load(snapshot / "bert" / "pytorch_model.bin", map_location="cpu", weights_only=True)
    sd.update(bert_to_original(bert_sd, bert_params(p["cond_stage_config"])["n_layer"]))
    missing = sorted(set(template) - set(sd))
    if missing:
        raise KeyError(f"the hub copy has no weights for {missing[:4]}")
    return sd

