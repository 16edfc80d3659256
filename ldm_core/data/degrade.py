"""Super-resolution degradations (paper §4.4): what the superres stage trains on and what its
evaluation downsamples."""
from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageFilter


def degrade(image: np.ndarray, rng: random.Random, factor: int = 4, bicubic_only: bool = False,
            p: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8 -> (H/f, W/f, 3) uint8: bicubic downsampling, with probability `p` a
    Gaussian blur before it and, independently with probability `p`, Gaussian noise after it
    (paper §4.4: bicubic, and a blur-plus-noise degradation for generalisation)."""
    img = Image.fromarray(image)
    if not bicubic_only and rng.random() < p:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
    low = img.resize((image.shape[1] // factor, image.shape[0] // factor), Image.BICUBIC)
    out = np.asarray(low, dtype=np.float32)
    if not bicubic_only and rng.random() < p:
        out = out + np.random.default_rng(rng.randrange(2 ** 31)).normal(0, rng.uniform(0, 8), out.shape)
    return out.round().clip(0, 255).astype(np.uint8)
