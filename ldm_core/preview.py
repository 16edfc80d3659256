"""Live previews within a time budget.

A preview is a cheap look at the first image's current latents, taken from inside a step
callback: decoded when the latents are small and a decode costs at most PREVIEW_BUDGET of the
generation time since the previous preview (or the start), else mapped to RGB by the
autoencoder's fitted linear latent -> RGB map (`latent_rgb.py`: milliseconds at 64x64 latents,
where a decode per preview would slow a generation noticeably, docs/design-notes.md), and only
where no map can be fitted, a false-colour view of the latent channels.
"""
from __future__ import annotations

import time
import weakref

import torch
from PIL import Image

from . import latent_rgb
from .pipelines.latents import decode_latents, latent_preview, to_pil

PREVIEW_BUDGET = 0.02       # the share of generation time previews may spend decoding
MAX_DECODED_LATENTS = 32 * 32
PREVIEW_SIDE = 256          # a preview is shown at least this large (a 64x64 model's 8x8 latent map too)


class Previewer:
    def __init__(self):
        self._decode_seconds: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # vae -> one decode
        self._since = 0.0                                                                # start or last preview

    def start(self) -> None:
        """A generation starts: previews budget their decodes from now."""
        self._since = time.perf_counter()

    @staticmethod
    def prepare(vae) -> None:
        """Find (or fit, once, then cache) `vae`'s latent -> RGB map now, off the step callbacks:
        a model load may call this so its first large preview costs no fit."""
        latent_rgb.for_vae(vae)

    @torch.inference_mode()
    def look(self, vae, latents: torch.Tensor):
        """A PIL image of the first of `latents` (B, C, h, w): decoded by `vae` within the budget,
        else through its latent -> RGB map (at the latent grid)."""
        lat = latents[:1]
        now = time.perf_counter()
        since, self._since = self._since, now
        if lat.shape[-1] * lat.shape[-2] <= MAX_DECODED_LATENTS:
            cost = self._decode_seconds.get(vae)
            if cost is None or cost <= PREVIEW_BUDGET * (now - since):
                image = to_pil(decode_latents(vae, lat.to(vae.dtype)))[0]
                self._since = time.perf_counter()
                self._decode_seconds[vae] = self._since - now
                return image
        rgb = latent_rgb.for_vae(vae)          # a dictionary lookup after the first call per autoencoder
        self._since = time.perf_counter()      # a first call's fit is no generation time
        if rgb is not None and rgb.channels == lat.shape[1]:
            return rgb.images(lat)[0]
        return latent_preview(lat)[0]


def enlarged(image, side: int = PREVIEW_SIDE):
    """`image` (PIL) scaled up by a whole factor to about `side` on its longer edge, each pixel a
    crisp block (nearest): an 8x8 latent map is shown as what it is, not blurred, and not as a 16 px
    speck. Images already that large are returned as they are."""
    factor = side // max(image.size)
    if factor < 2:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)
