"""The caption -> layout planner: a tiny transformer that reads a caption as word ids and writes
the objects it names as box tokens (label, then the corners x0, y0, x1, y1 quantised to 1/64),
one object after another, as LayoutGPT / LLM-grounded diffusion plan a layout before drawing it.

Nothing here knows the caption grammar: words are ids of the vocabulary read from training
captions, labels are ids of the labels seen in training scenes, and the relation words become box
arrangements only through training (`python -m ldm_core.train planner`, docs/training.md). A
layout model then draws the boxes (`ldm_core/compositions/grounded.py`).

The sequence the decoder writes: BOS, (label, x0, y0, x1, y1) per object, EOS. Sampling follows the
sequence's own structure (a label or EOS where an object starts, coordinates after it, x1 > x0 and
y1 > y0) and draws from the model's distribution at `temperature` with a seeded generator, so one
caption gives a different, equally likely arrangement per seed.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

PAD, BOS, EOS = 0, 1, 2              # output specials (the word vocabulary's own: 0 padding, 1 unknown)
SPECIALS = 3                          # output ids below this are PAD, BOS, EOS
WORD_SPECIALS = ("<pad>", "<unk>")
TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


class PlannerError(ValueError):
    """A caption the planner cannot read (a word it never saw, too long)."""


def words_of(caption: str) -> list[str]:
    """The caption as lower-case words and punctuation marks (no grammar: just where words end)."""
    return TOKEN.findall(caption.lower())


@dataclass
class PlannerConfig:
    words: list[str] = field(default_factory=lambda: list(WORD_SPECIALS))   # word id -> word
    labels: list[str] = field(default_factory=list)                         # label id -> label
    bins: int = 64                     # a corner is one of bins + 1 positions, 0..bins (fractions of the side)
    width: int = 128
    heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 3
    ff: int = 256
    max_words: int = 32
    max_objects: int = 6
    temperature: float = 0.3           # sampling temperature of `plan` (chosen on a validation split)

    @property
    def vocab_out(self) -> int:
        return SPECIALS + len(self.labels) + self.bins + 1

    @property
    def max_tokens(self) -> int:
        return 2 + 5 * self.max_objects

    def coord_id(self, q: int) -> int:
        return SPECIALS + len(self.labels) + q


class LayoutPlanner(nn.Module):
    """Encoder over caption words, decoder over box tokens (a standard nn.Transformer)."""

    def __init__(self, cfg: PlannerConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.word_emb = nn.Embedding(len(cfg.words), w, padding_idx=0)
        self.word_pos = nn.Embedding(cfg.max_words, w)
        self.tok_emb = nn.Embedding(cfg.vocab_out, w, padding_idx=PAD)
        self.tok_pos = nn.Embedding(cfg.max_tokens, w)
        layer = nn.TransformerEncoderLayer(w, cfg.heads, cfg.ff, dropout=0.0, batch_first=True, norm_first=True)
        encoder = nn.TransformerEncoder(layer, cfg.encoder_layers, nn.LayerNorm(w), enable_nested_tensor=False)
        self.core = nn.Transformer(w, cfg.heads, cfg.encoder_layers, cfg.decoder_layers, cfg.ff, dropout=0.0,
                                   batch_first=True, norm_first=True, custom_encoder=encoder)
        self.head = nn.Linear(w, cfg.vocab_out)

    def encode(self, words: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(words.shape[1], device=words.device)
        return self.core.encoder(self.word_emb(words) + self.word_pos(pos), src_key_padding_mask=words == 0)

    def decode(self, memory: torch.Tensor, words: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[1]
        pos = torch.arange(n, device=tokens.device)
        causal = nn.Transformer.generate_square_subsequent_mask(n, device=tokens.device)
        h = self.core.decoder(self.tok_emb(tokens) + self.tok_pos(pos), memory, tgt_mask=causal, tgt_is_causal=True,
                              memory_key_padding_mask=words == 0)
        return self.head(h)

    def forward(self, words: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Logits (batch, len, vocab_out) of each next token, given the tokens so far (teacher forcing)."""
        return self.decode(self.encode(words), words, tokens)

    # ------------------------------------------------------------------ caption and boxes as ids
    def word_ids(self, caption: str) -> list[int]:
        index = {w: i for i, w in enumerate(self.cfg.words)}
        words = words_of(caption)
        unknown = sorted({w for w in words if w not in index})
        if unknown:
            raise PlannerError(f"the layout planner never saw the word(s) {', '.join(map(repr, unknown))}; "
                               f"it reads Shapes World captions like 'a red circle left of a blue square'")
        if not words or len(words) > self.cfg.max_words:
            raise PlannerError(f"the layout planner reads captions of 1 to {self.cfg.max_words} words, "
                               f"got {len(words)}")
        return [index[w] for w in words]

    def box_tokens(self, boxes: list[tuple[str, tuple[float, ...]]]) -> list[int]:
        """BOS, then label and quantised corners per box, then EOS (the training target)."""
        labels = {name: i for i, name in enumerate(self.cfg.labels)}
        out = [BOS]
        for label, box in boxes:
            out.append(SPECIALS + labels[label])
            out += [self.cfg.coord_id(round(v * self.cfg.bins)) for v in box]
        return out + [EOS]

    # ------------------------------------------------------------------ sampling
    def allowed(self, tokens: list[int]) -> torch.Tensor:
        """Which next tokens the sequence's structure allows after `tokens`."""
        cfg = self.cfg
        ok = torch.zeros(cfg.vocab_out, dtype=torch.bool)
        slot = (len(tokens) - 1) % 5        # 0: a label or EOS; 1-4: x0, y0, x1, y1
        if slot == 0:
            ok[SPECIALS:SPECIALS + len(cfg.labels)] = len(tokens) < cfg.max_tokens - 1
            ok[EOS] = len(tokens) > 1
            return ok
        low, high = 0, cfg.bins - 1         # x0, y0: left of / above the far edge
        if slot in (3, 4):                  # x1 after x0, y1 after y0
            low, high = tokens[-2] - cfg.coord_id(0) + 1, cfg.bins
        ok[cfg.coord_id(low):cfg.coord_id(high) + 1] = True
        return ok

    @torch.no_grad()
    def plan(self, caption: str, seed: int = 0, temperature: float | None = None) -> list[tuple[str, tuple]]:
        """The objects the caption names, with boxes ((x0, y0, x1, y1) in [0, 1]), one arrangement per seed
        (at the config's temperature unless given)."""
        temperature = self.cfg.temperature if temperature is None else temperature
        if not 0 < temperature <= 2:
            raise PlannerError(f"temperature must be in (0, 2], got {temperature}")
        gen = torch.Generator().manual_seed(int(seed))
        words = torch.tensor([self.word_ids(caption)])
        memory = self.encode(words)
        tokens = [BOS]
        while len(tokens) < self.cfg.max_tokens:
            logits = self.decode(memory, words, torch.tensor([tokens]))[0, -1].float()
            logits = logits.masked_fill(~self.allowed(tokens), float("-inf"))
            nxt = int(torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=gen))
            if nxt == EOS:
                break
            tokens.append(nxt)
        return self.boxes_of(tokens)

    def boxes_of(self, tokens: list[int]) -> list[tuple[str, tuple[float, ...]]]:
        cfg = self.cfg
        body = tokens[1:]
        out = []
        for i in range(0, len(body) - len(body) % 5, 5):
            label = cfg.labels[body[i] - SPECIALS]
            out.append((label, tuple((t - cfg.coord_id(0)) / cfg.bins for t in body[i + 1:i + 5])))
        return out


def save_planner(model: LayoutPlanner, folder: str | Path) -> None:
    """config.json and fp16 safetensors weights."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(asdict(model.cfg), indent=1))
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))


def load_planner(folder: str | Path) -> LayoutPlanner:
    """The planner in `folder` (config.json, model.safetensors), in float32 on the CPU, in eval mode."""
    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"no layout planner in {folder}: it needs config.json and model.safetensors "
                                f"(python -m ldm_core.train planner --export {folder})")
    cfg = PlannerConfig(**json.loads((folder / "config.json").read_text()))
    model = LayoutPlanner(cfg)
    state = {k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()}
    model.load_state_dict(state)
    return model.eval()
