"""Prompt syntax, read before a prompt reaches a text encoder (docs/prompting.md).

- Weights, as AUTOMATIC1111's web UI writes them: `(word:1.3)`, `(word)` = x1.1, `[word]` = /1.1;
  nesting multiplies; `\\(`, `\\)`, `\\[`, `\\]` are literal brackets. `parse_weights` splits a prompt
  into (text, weight) chunks and `weighted_ids` turns them into token ids and per-token weights; the
  pipelines scale each token's hidden state by its weight and restore the mean (`reweight`).
- Wildcards, one pick per image from its seed: `{red|blue}` one of the options, `__colours__` one line
  of `colours.txt` in the wildcard folder (LDM_WILDCARDS_DIR, default `wildcards/` at the repo root).
- `count_tokens`: the tokens a prompt takes, against what the model reads, and what would be cut.

A prompt without this syntax is passed through unchanged, so its embedding is the same as ever.
"""
from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer

from .requests import RequestError

ROUND, SQUARE = 1.1, 1 / 1.1           # what ( ) and [ ] multiply a weight by
WEIGHT_RANGE = (0.0, 5.0)
WILDCARDS_DIR = Path(__file__).resolve().parent.parent / "wildcards"
CENTRED = 1e-4                         # |mean| below this share of the mean |value|: a centred embedding
RESCALE = (0.2, 5.0)                   # a mean restored by a factor outside this was ~0: left as it is
MAX_DEPTH = 8                          # wildcards inside wildcards, at most this deep
_ATTENTION = re.compile(r"\\[()\[\]\\]|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:")
_NAME = re.compile(r"__([A-Za-z0-9][\w\-]*?)__")


class PromptError(RequestError):
    """A prompt's syntax is wrong; the message says where and what would fit."""


@dataclass(frozen=True)
class Chunk:
    text: str
    weight: float = 1.0


# ------------------------------------------------------------------ weights
def parse_weights(prompt: str) -> list[Chunk]:
    """`prompt` as (text, weight) chunks, brackets and escapes removed, equal neighbours merged."""
    chunks: list[list] = []
    opened: list[tuple[str, int, int]] = []          # (bracket, first chunk inside, character)
    for m in _ATTENTION.finditer(prompt):
        tok, weight = m.group(0), m.group(1)
        if tok.startswith("\\"):
            chunks.append([tok[1:] or "\\", 1.0])
        elif tok in "([":
            opened.append((tok, len(chunks), m.start()))
        elif weight is not None or tok in ")]":
            _close(prompt, chunks, opened, tok, weight, m.start())
        else:
            chunks.append([tok, 1.0])
    if opened:
        bracket, _, at = opened[-1]
        raise PromptError(f"prompt: {bracket!r} at character {at + 1} is never closed; close it, or write "
                          f"'\\{bracket}' for a literal bracket")
    merged: list[Chunk] = []
    for text, w in chunks:
        if merged and merged[-1].weight == w:
            merged[-1] = Chunk(merged[-1].text + text, w)
        elif text:
            merged.append(Chunk(text, w))
    return merged or [Chunk("")]


def _close(prompt: str, chunks: list, opened: list, tok: str, weight: str | None, at: int) -> None:
    """A closing bracket (or `:weight)`): multiply the chunks since its opening bracket."""
    want = "[" if tok == "]" else "("
    if not opened or opened[-1][0] != want:
        close = "]" if tok == "]" else ")"
        raise PromptError(f"prompt: {close!r} at character {at + 1} closes no {want!r}; write '\\{close}' for a "
                          f"literal bracket")
    _, start, _ = opened.pop()
    factor = SQUARE if tok == "]" else ROUND
    if weight is not None:
        try:
            factor = float(weight)
        except ValueError:
            raise PromptError(f"prompt: the weight {weight!r} at character {at + 1} is not a number; write e.g. "
                              f"(red:1.3)") from None
        if not WEIGHT_RANGE[0] <= factor <= WEIGHT_RANGE[1]:
            raise PromptError(f"prompt: the weight {factor:g} at character {at + 1} is outside "
                              f"{WEIGHT_RANGE[0]:g} to {WEIGHT_RANGE[1]:g}")
    for chunk in chunks[start:]:
        chunk[1] *= factor


def is_weighted(chunks: list[Chunk]) -> bool:
    return any(c.weight != 1.0 for c in chunks)


def plain_text(chunks: list[Chunk]) -> str:
    """The prompt as the tokenizer reads it: brackets and escapes gone."""
    return "".join(c.text for c in chunks)


@dataclass
class Tokens:
    ids: list[int]          # the text's tokens, without the tokenizer's own (<bos>, [CLS], ...)
    weights: list[float]


def content_tokens(tokenizer, chunks: list[Chunk]) -> Tokens:
    """Each chunk tokenized alone (as A1111 does), with its weight on each of its tokens."""
    ids, weights = [], []
    for c in chunks:
        got = tokenizer(c.text, add_special_tokens=False).input_ids if c.text else []
        ids += got
        weights += [c.weight] * len(got)
    return Tokens(ids, weights)


def special_tokens(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer puts before and after a text (<bos> / <eos>, [CLS] / [SEP], ...)."""
    full = tokenizer("a", add_special_tokens=True).input_ids
    plain = tokenizer("a", add_special_tokens=False).input_ids
    for k in range(len(full) - len(plain) + 1):
        if full[k:k + len(plain)] == plain:
            return full[:k], full[k + len(plain):]
    return [], []


def weighted_ids(tokenizer, limit: int, chunks: list[Chunk]) -> Tokens:
    """`limit` token ids (the tokenizer's own around the text, cut and padded as it would) and their weights."""
    head, tail = special_tokens(tokenizer)
    toks = content_tokens(tokenizer, chunks)
    room = max(0, limit - len(head) - len(tail))
    ids = head + toks.ids[:room] + tail
    weights = [1.0] * len(head) + toks.weights[:room] + [1.0] * len(tail)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Tokens(ids + [pad] * (limit - len(ids)), weights + [1.0] * (limit - len(weights)))


def reweight(hidden, weights):
    """A1111's emphasis: each token's hidden state (B, L, D) times its weight (B, L), then scaled so
    that each prompt's mean is what it was. A prompt whose weights are all 1 is left exactly as it is;
    so is the scale of one whose states are centred (a final layer norm without bias: mean ~0, where
    the ratio of two means is noise, and could flip the sign), or whose ratio is outside RESCALE."""
    h = hidden.float()
    before = h.mean(dim=(1, 2), keepdim=True)
    centred = before.abs() <= CENTRED * h.abs().mean(dim=(1, 2), keepdim=True)
    h = h * weights.to(h.device, h.dtype)[..., None]
    after = h.mean(dim=(1, 2), keepdim=True)
    ratio = before / after.where(after != 0, before)
    sane = ~centred & (ratio >= RESCALE[0]) & (ratio <= RESCALE[1])
    return (h * torch.where(sane, ratio, torch.ones_like(ratio))).to(hidden.dtype)


# ------------------------------------------------------------------ counting
@dataclass(frozen=True)
class TokenCount:
    used: int               # the prompt's own tokens (weight syntax not counted)
    limit: int              # how many of them the model reads (its encoder's length less its own tokens)
    cut_off_text: str = ""  # the text past the limit, as the tokenizer reads it
    kept_text: str = ""     # the text the model reads

    @property
    def over(self) -> bool:
        return self.used > self.limit


def count_tokens(tokenizer, text_encoder_limit: int, prompt: str) -> TokenCount:
    """The tokens `prompt` takes (brackets and weights not counted) against the `text_encoder_limit`
    the model reads (its own <bos>/<eos> included there), and what would be cut off."""
    head, tail = special_tokens(tokenizer)
    room = max(0, text_encoder_limit - len(head) - len(tail))
    ids = content_tokens(tokenizer, parse_weights(prompt)).ids
    kept = tokenizer.decode(ids[:room], skip_special_tokens=True)
    cut = tokenizer.decode(ids[room:], skip_special_tokens=True) if len(ids) > room else ""
    return TokenCount(len(ids), room, cut.strip(), kept.strip())


def encoder_limit(model_max_length: int, positions: int | None) -> int:
    """Tokens a text encoder reads: the tokenizer's `model_max_length`, capped by the encoder's
    position table (CompVis' LDMBert has 77 positions while its hub tokenizer says 512)."""
    return min(model_max_length, positions or model_max_length)


def tokenizer_at(folder: Path):
    """(tokenizer, tokens its text encoder reads) of a diffusers model folder, without loading any
    weights; None when the model reads no text."""
    index = json.loads((folder / "model_index.json").read_text())
    shared = index.get("_shared", {})
    if "tokenizer" not in index:
        return None
    where = (folder / shared["tokenizer"]).resolve() if "tokenizer" in shared else folder / "tokenizer"
    tokenizer = AutoTokenizer.from_pretrained(where)
    encoder = next((c for c in ("text_encoder", "bert") if c in index), None)
    root = (folder / shared[encoder]).resolve() if encoder in shared else folder / (encoder or "")
    config = root / "config.json"
    positions = json.loads(config.read_text()).get("max_position_embeddings") if config.is_file() else None
    return tokenizer, encoder_limit(tokenizer.model_max_length, positions)


# ------------------------------------------------------------------ wildcards
def wildcards_dir() -> Path:
    return Path(os.environ.get("LDM_WILDCARDS_DIR") or WILDCARDS_DIR)


def has_wildcards(text: str) -> bool:
    return "{" in text or "}" in text or bool(_NAME.search(text))


def wildcard_lists(folder: Path | None = None) -> list[str]:
    """The names of the wildcard lists in the folder (`colours` for colours.txt)."""
    folder = folder or wildcards_dir()
    return sorted(p.stem for p in folder.glob("*.txt")) if folder.is_dir() else []


def wildcard_lines(name: str, folder: Path | None = None) -> list[str]:
    """The options of `__name__`: the non-empty lines of name.txt that are not # comments."""
    folder = folder or wildcards_dir()
    path = folder / f"{name}.txt"
    if not path.is_file():
        have = ", ".join(f"__{n}__" for n in wildcard_lists(folder)) or "no lists"
        raise PromptError(f"no wildcard list __{name}__: the wildcard folder {folder} has {have}")
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if not lines:
        raise PromptError(f"the wildcard list {path} is empty")
    return lines


def expand(template: str, seed: int, what: str = "prompt", folder: Path | None = None) -> str:
    """`template` with every `{a|b}` and `__name__` replaced by one pick, left to right, the same
    picks for the same seed (`what` keeps a negative prompt's picks apart from the prompt's)."""
    if not has_wildcards(template):
        return template
    return _expand(template, random.Random(f"{what}:{seed}"), folder or wildcards_dir(), 0)


def _expand(text: str, rng: random.Random, folder: Path, depth: int) -> str:
    if depth > MAX_DEPTH:
        raise PromptError(f"wildcards nest deeper than {MAX_DEPTH} levels: does a list name itself?")
    out, i = [], 0
    while i < len(text):
        name = _NAME.match(text, i)
        if name:
            out.append(_expand(rng.choice(wildcard_lines(name.group(1), folder)), rng, folder, depth + 1))
            i = name.end()
        elif text[i] == "{":
            end, options = _options(text, i)
            out.append(_expand(rng.choice(options), rng, folder, depth + 1))
            i = end
        elif text[i] == "}":
            raise PromptError(f"prompt: '}}' at character {i + 1} closes no '{{'")
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _options(text: str, start: int) -> tuple[int, list[str]]:
    """The options of the `{...|...}` at `start` (split at its own level) and where it ends."""
    depth, cut, options = 0, start + 1, []
    for j in range(start, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j + 1, options + [text[cut:j]]
        elif text[j] == "|" and depth == 1:
            options.append(text[cut:j])
            cut = j + 1
    raise PromptError(f"prompt: '{{' at character {start + 1} is never closed; write {{red|blue}} for one of "
                      f"red or blue")


def split_top(text: str, sep: str = "|") -> list[str]:
    """`text` split at each `sep` outside braces (an x/y plot's prompt values)."""
    parts, depth, cut = [], 0, 0
    for j, ch in enumerate(text):
        depth += (ch == "{") - (ch == "}")
        if ch == sep and depth == 0:
            parts.append(text[cut:j])
            cut = j + 1
    return parts + [text[cut:]]
