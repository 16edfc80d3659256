"""The BERT-conditioned zoo models' text encoder -> diffusers' LDMBertModel (and its tokenizer).

Facts from CompVis/latent-diffusion@a506df5 (read, not copied):
  ldm/modules/encoders/modules.py  BERTEmbedder(n_embed, n_layer, vocab_size=30522, max_seq_len=77,
      device, use_tokenizer=True, embedding_dropout=0.0) = TransformerWrapper(num_tokens=vocab_size,
      max_seq_len, attn_layers=Encoder(dim=n_embed, depth=n_layer), emb_dropout), run as
      `transformer(tokens, return_embeddings=True)`, no mask; its tokens: BERTTokenizer =
      transformers' BertTokenizerFast "bert-base-uncased", truncation, max_length=max_seq_len,
      padding="max_length" (so every context is max_seq_len long, [PAD]s attended to).
  ldm/modules/x_transformer.py  TransformerWrapper: token_emb, pos_emb.emb (AbsolutePositionalEmbedding,
      added unscaled), emb_dropout, project_emb = Identity (emb_dim == dim), attn_layers, norm
      (LayerNorm, after the layers), to_logits (Linear(dim, num_tokens): unused for embeddings, kept).
      AttentionLayers' defaults, which BERTEmbedder never overrides: heads 8, dim_head 64
      (DEFAULT_DIM_HEAD: inner width 512 whatever n_embed is), pre_norm, nn.LayerNorm (eps 1e-5),
      layer types ('a', 'f') * depth, each layer ModuleList[norm, block, Residual] ->
      `layers.{2i}.0` / `.1` (attention) and `layers.{2i+1}.0` / `.1` (feed-forward). Attention:
      to_q/to_k/to_v Linear(dim, 512, bias=False), softmax(q k^T * dim_head**-0.5), to_out
      Linear(512, dim). FeedForward(mult=4, glu=False): net = [Sequential(Linear(dim, 4 dim),
      nn.GELU()), Dropout, Linear(4 dim, dim)] -> `net.0.0`, `net.2`.
diffusers' LDMBertModel (pipelines/latent_diffusion/pipeline_latent_diffusion.py, 0.42): model.embed_tokens
  + model.embed_positions (unscaled: `scale_embedding` is never read), layers.i = pre-norm
  self_attn_layer_norm, self_attn.{q,k,v}_proj (no bias), out_proj, final_layer_norm, fc1,
  ACT2FN["gelu"] (erf GELU, as nn.GELU()), fc2; model.layer_norm (eps 1e-5); to_logits. Its query is
  scaled by head_dim**-0.5 before q k^T: the same product. Called without an attention mask, as the
  original. Dropouts only act in training (set 0 here).
So the mapping is a renaming; what it cannot express (another head width, memory tokens, a
ScaleNorm/RMSNorm/ReZero layer, a projected embedding) shows as an unknown key or a shape and is
refused. The tokenizer is bert-base-uncased's as the diffusers copy ships it (`tokenizer/` of
CompVis/ldm-text2im-large-256 at the commit the catalog pins), fetched once, at conversion.
"""
from __future__ import annotations

from pathlib import Path

from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel
from huggingface_hub import constants, hf_hub_download
from transformers import BertTokenizer

from .rename import ConversionError, load_strict, remap

BERT_EMBEDDER = "ldm.modules.encoders.modules.BERTEmbedder"
HEADS, DIM_HEAD, FF_MULT = 8, 64, 4          # x_transformer.py: AttentionLayers' and FeedForward's defaults
KNOWN_PARAMS = {"n_embed", "n_layer", "vocab_size", "max_seq_len", "device", "use_tokenizer", "embedding_dropout"}
TEXT_PIPELINES = ("Text2ImgPipeline", "PaperLayoutPipeline")     # with a tokenizer / taking token ids
# the tokenizer: bert-base-uncased's files as the diffusers copy of txt2img-large ships them (the catalog's pin)
TOKENIZER_REPO = "CompVis/ldm-text2im-large-256"
TOKENIZER_REVISION = "30de525ca11a880baea4962827fb6cb0bb268955"
TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def bert_params(cs: dict) -> dict:
    """BERTEmbedder's parameters with modules.py's defaults; anything else refused."""
    p = dict(cs.get("params") or {})
    unknown = sorted(set(p) - KNOWN_PARAMS)
    if unknown:
        raise ConversionError(f"cond_stage_config: BERTEmbedder parameters {unknown} are not supported")
    for key in ("n_embed", "n_layer"):
        if not isinstance(p.get(key), int) or p[key] < 1:
            raise ConversionError(f"cond_stage_config: BERTEmbedder needs a positive integer {key}")
    return {"vocab_size": 30522, "max_seq_len": 77, "use_tokenizer": True, **p}


def text_pipeline(cs: dict) -> str:
    """The studio pipeline of a BERTEmbedder model: with its tokenizer, text -> image; without
    (layout2img: box tokens given as ids), the paper's layout pipeline."""
    return "Text2ImgPipeline" if bert_params(cs)["use_tokenizer"] else "PaperLayoutPipeline"


def unet_node(node: dict) -> dict:
    """unet_config with `legacy: False` (txt2img-1p4B) made `legacy: True` where it changes nothing:
    openaimodel.UNetModel only recomputes dim_head = ch // num_heads under legacy, which equals
    num_head_channels, or ch // num_heads, whenever the heads divide the width (unet.py refuses the rest)."""
    p = node.get("params") or {}
    if p.get("legacy", True) is not False:
        return node
    return {**node, "params": {**p, "legacy": True}}


def bert_table(n_layer: int) -> dict:
    """x-transformers module prefix (under `cond_stage_model.transformer.`) -> LDMBertModel prefix."""
    table = {"token_emb": "model.embed_tokens", "pos_emb.emb": "model.embed_positions",
             "norm": "model.layer_norm", "to_logits": "to_logits"}
    for i in range(n_layer):
        a, f, d = f"attn_layers.layers.{2 * i}", f"attn_layers.layers.{2 * i + 1}", f"model.layers.{i}"
        table[f"{a}.0"] = f"{d}.self_attn_layer_norm"
        for x in "qkv":
            table[f"{a}.1.to_{x}"] = f"{d}.self_attn.{x}_proj"
        table[f"{a}.1.to_out"] = f"{d}.self_attn.out_proj"
        table[f"{f}.0"] = f"{d}.final_layer_norm"
        table[f"{f}.1.net.0.0"] = f"{d}.fc1"
        table[f"{f}.1.net.2"] = f"{d}.fc2"
    return table


def bert_config(p: dict) -> LDMBertConfig:
    """The LDMBertConfig of BERTEmbedder parameters (bert_params)."""
    d = p["n_embed"]
    return LDMBertConfig(vocab_size=p["vocab_size"], max_position_embeddings=p["max_seq_len"],
                         encoder_layers=p["n_layer"], encoder_ffn_dim=FF_MULT * d, encoder_attention_heads=HEADS,
                         head_dim=DIM_HEAD, d_model=d, activation_function="gelu", dropout=0.0,
                         attention_dropout=0.0, activation_dropout=0.0, scale_embedding=False, pad_token_id=0)


def convert_bert(cond_sd: dict, cs: dict, context_dim: int | None = None) -> LDMBertModel:
    """`cond_stage_model.*` (prefix removed) of a BERTEmbedder -> LDMBertModel, strictly."""
    p = bert_params(cs)
    if context_dim is not None and context_dim != p["n_embed"]:
        raise ConversionError(f"unet_config.context_dim {context_dim} != the BERTEmbedder's n_embed {p['n_embed']}")
    sd = {}
    for key, t in cond_sd.items():
        if not key.startswith("transformer."):
            raise ConversionError(f"cond_stage_model.{key}: not a key of BERTEmbedder (its weights are transformer.*)")
        sd[key[len("transformer."):]] = t
    q = sd.get("attn_layers.layers.0.1.to_q.weight")
    if q is not None and q.shape[0] != HEADS * DIM_HEAD:
        raise ConversionError(f"cond_stage_model: attention width {q.shape[0]} is not x-transformers' "
                              f"{HEADS} heads x {DIM_HEAD}, which BERTEmbedder always builds")
    out, left = remap(sd, {k: (v, None) for k, v in bert_table(p["n_layer"]).items()}, {})
    return load_strict(LDMBertModel(bert_config(p)), out, left, "text encoder (BERTEmbedder)")


def bert_tokenizer(max_length: int) -> BertTokenizer:
    """bert-base-uncased's tokenizer (lower case, [CLS] ... [SEP] [PAD]...), reading `max_length`
    tokens as BERTTokenizer does; from the Hugging Face cache, else downloaded (a few hundred kB)."""
    offline = bool(constants.HF_HUB_OFFLINE)
    try:
        paths = [hf_hub_download(TOKENIZER_REPO, f"tokenizer/{name}", revision=TOKENIZER_REVISION,
                                 local_files_only=offline) for name in TOKENIZER_FILES]
    except Exception as e:
        how = "this machine is offline (HF_HUB_OFFLINE) and they are not cached" if offline else type(e).__name__
        raise ConversionError(f"the BERT tokenizer files ({TOKENIZER_REPO}@{TOKENIZER_REVISION[:7]} tokenizer/, "
                              f"bert-base-uncased's vocabulary) are needed once, to convert: {how}") from None
    folder = Path(paths[0]).parent
    return BertTokenizer.from_pretrained(folder, model_max_length=max_length, do_lower_case=True)


def convert_text_stage(cond_sd: dict, cs: dict, context_dim: int | None):
    """(LDMBertModel, its tokenizer or None where the model takes token ids: use_tokenizer false)."""
    encoder = convert_bert(cond_sd, cs, context_dim)
    p = bert_params(cs)
    return encoder, bert_tokenizer(p["max_seq_len"]) if p["use_tokenizer"] else None


def text_components(cond_sd: dict, p: dict) -> dict:
    """convert.py's extra components of a BERTEmbedder model: text_encoder, and tokenizer where it
    tokenizes (the names Text2ImgPipeline takes; the hub copy's `bert` is their alias)."""
    unet = (p.get("unet_config") or {}).get("params") or {}
    encoder, tokenizer = convert_text_stage(cond_sd, p["cond_stage_config"], unet.get("context_dim"))
    cond_sd.clear()
    return {"text_encoder": encoder, "tokenizer": tokenizer}
