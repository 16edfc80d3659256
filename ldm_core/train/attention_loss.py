"""A cross-attention loss that ties each object's words to its box (TokenCompose, Wang et al. 2024;
the same idea as attention-refocusing and layout-guidance methods, applied during training).

Shapes World knows every object's box exactly. For each captioned example, the colour and shape
tokens of each object ("red", "circle") should attend to that object's region: at every
cross-attention layer the share of those tokens' attention mass that falls inside the box is
pushed towards 1, loss (1 - share)^2 averaged over objects and layers. Labels that occur twice in
a caption are skipped (which box is which is ambiguous).

    python -m ldm_core.train text2img ... --attention-loss 0.05
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

MAX_OBJECTS = 3


@dataclass
class ObjectTokens:
    """Which tokens name which object, and where the object is, for a batch."""
    select: torch.Tensor     # (B, L, K) 1 where token l names object k
    boxes: torch.Tensor      # (B, K, 4) normalised x0, y0, x1, y1
    valid: torch.Tensor      # (B, K) bool: object k of example b takes part


def object_tokens(tokenizer, texts: list[str], boxes: list[list[dict]], length: int) -> ObjectTokens:
    """For each text, the token positions (after <bos>) of each box's "colour shape" words in it."""
    sel = torch.zeros(len(texts), length, MAX_OBJECTS)
    bx = torch.zeros(len(texts), MAX_OBJECTS, 4)
    valid = torch.zeros(len(texts), MAX_OBJECTS, dtype=torch.bool)
    for b, (text, objs) in enumerate(zip(texts, boxes)):
        words = tokenizer.tokenize(text)
        pairs = list(zip(words, words[1:]))
        for k, o in enumerate(objs[:MAX_OBJECTS]):
            label = tuple(o["label"].split())
            if pairs.count(label) != 1:
                continue
            i = pairs.index(label) + 1          # + 1: <bos>
            if i + 1 < length:
                sel[b, i:i + 2, k] = 1
                bx[b, k] = torch.tensor(o["box"])
                valid[b, k] = True
    return ObjectTokens(sel, bx, valid)


def box_cover(boxes: torch.Tensor, r: int) -> torch.Tensor:
    """(B, K, 4) normalised boxes -> (B, K, r*r): the share of each cell of an r x r grid inside the box."""
    edges = torch.arange(r + 1, dtype=boxes.dtype) / r
    lo = edges[:-1]                                                     # (r,)
    hi = edges[1:]                                                      # (r,)
    cx = (torch.minimum(boxes[..., 2:3], hi) - torch.maximum(boxes[..., 0:1], lo)).clamp(min=0) * r  # (B, K, r)
    cy = (torch.minimum(boxes[..., 3:4], hi) - torch.maximum(boxes[..., 1:2], lo)).clamp(min=0) * r
    return (cy[..., :, None] * cx[..., None, :]).flatten(-2)


class _Recorder(AttnProcessor):
    """Computes cross-attention explicitly and keeps the probabilities while recording; otherwise
    the usual fused kernel."""

    def __init__(self, store: list, state: dict):
        self.store = store
        self.state = state
        self.fast = AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        if not self.state.get("on"):
            return self.fast(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        scores = attn.get_attention_scores

        def recording(q, k, mask=None):
            p = scores(q, k, mask)            # (B * heads, N, L)
            self.store.append((p, attn.heads))
            return p
        attn.get_attention_scores = recording
        try:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)
        finally:
            del attn.get_attention_scores


class AttentionLoss:
    """Install on a UNet; wrap its training forward in `recording()`; then `loss(tokens)`."""

    def __init__(self, unet, weight: float):
        self.weight = weight
        self.maps = []
        self.state = {"on": False}
        procs = {name: _Recorder(self.maps, self.state) if "attn2" in name else proc
                 for name, proc in unet.attn_processors.items()}
        unet.set_attn_processor(procs)

    @contextmanager
    def recording(self):
        self.maps.clear()
        self.state["on"] = True
        try:
            yield
        finally:
            self.state["on"] = False

    def loss(self, tokens: ObjectTokens) -> torch.Tensor:
        """Mean over recorded layers and valid objects of (1 - attention share inside the box)^2."""
        if not self.maps or not tokens.valid.any():
            self.maps.clear()
            return torch.zeros(())
        total = []
        sel = tokens.select.to(self.maps[0][0])
        valid = tokens.valid.to(self.maps[0][0])
        for p, heads in self.maps:
            b = sel.shape[0]
            a = p.view(b, heads, p.shape[1], p.shape[2]).mean(1)          # (B, N, L)
            per_obj = a[..., :sel.shape[1]] @ sel                          # (B, N, K)
            cover = box_cover(tokens.boxes, int(round(p.shape[1] ** 0.5))).to(a)  # (B, K, N)
            inside = (per_obj * cover.transpose(1, 2)).sum(1) / (per_obj.sum(1) + 1e-6)   # (B, K)
            total.append((((1 - inside) ** 2) * valid).sum() / valid.sum())
        self.maps.clear()
        return self.weight * torch.stack(total).mean()
