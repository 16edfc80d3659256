"""The domain encoder tau_theta of the built-in models: a word-level tokenizer built from
the Shapes World caption vocabulary, and a small transformer text encoder trained from
scratch with the UNet (as the paper's text-to-image LDM trains its transformer).

Both are standard `transformers` objects (`PreTrainedTokenizerFast`, `CLIPTextModel`),
saved and loaded with `save_pretrained` / `from_pretrained`, so the pipelines treat them
exactly like the hub checkpoints' BERT or CLIP encoders.
"""
from __future__ import annotations

from dataclasses import dataclass

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from .data.shapes import COLORS, SHAPES

SPECIALS = ["<pad>", "<unk>", "<bos>", "<eos>"]
# Coordinate tokens for layout conditioning: a box edge quantised to 1/32 of the canvas.
LOC_BINS = 33
LAYOUT_TOKENS = ["<box>"] + [f"<loc{i}>" for i in range(LOC_BINS)]
WORDS = (["a", "an", "and", ",", "left", "right", "of", "above", "below", "the", "with", "next", "to",
          "on", "top", "under", "picture", "image", "one", "two", "three"] + list(COLORS) + list(SHAPES)
         + [s + "s" for s in SHAPES])


def build_tokenizer(model_max_length: int = 24):
    """A word-level fast tokenizer: lowercase, split on whitespace and punctuation,
    `<bos> ... <eos>` around every text, padded with `<pad>`."""

    vocab = {t: i for i, t in enumerate(SPECIALS + LAYOUT_TOKENS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Split(",", behavior="isolated")])
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", vocab["<bos>"]), ("<eos>", vocab["<eos>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, model_max_length=model_max_length, pad_token="<pad>", unk_token="<unk>",
        bos_token="<bos>", eos_token="<eos>", padding_side="right", truncation_side="right")


@dataclass
class TextEncoderConfig:
    hidden_size: int = 128
    layers: int = 3
    heads: int = 4
    max_length: int = 24


def build_text_encoder(cfg: TextEncoderConfig, tokenizer):
    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.hidden_size * 4,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, max_position_embeddings=cfg.max_length,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, projection_dim=cfg.hidden_size)
    return CLIPTextModel(config)


def layout_text(caption: str, boxes: list[tuple[str, tuple[float, float, float, float]]]) -> str:
    """Serialise a caption and labelled boxes into one token string (paper §4.3: each box
    becomes tokens: its label and its quantised corner coordinates)."""
    def q(v: float) -> str:
        return f"<loc{min(LOC_BINS - 1, max(0, round(v * (LOC_BINS - 1))))}>"
    parts = [caption.strip()] if caption.strip() else []
    for label, (x0, y0, x1, y1) in boxes:
        parts.append(f"<box> {label} {q(x0)} {q(y0)} {q(x1)} {q(y1)}")
    return " ".join(parts)
