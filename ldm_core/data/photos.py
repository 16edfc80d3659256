"""Natural photographs that ship inside installed packages (scikit-image's sample images and
matplotlib's), cut into 64x64 crops: the super-resolution model and its autoencoder train on
these beside Shapes World scenes so the SR tab also works on real photos.

Three disjoint splits, crops deterministic per seed:
- "train": scikit-image's and matplotlib's sample photos less the held-out ones;
- "heldout" (`HELDOUT`): the photo eval crops come from these alone, never trained on or tuned on;
- "val" (`VAL`): photos that ship with scikit-image's stereo data and gradio's example assets,
  never trained on either: settings (samples averaged, blends) are chosen on these.
"""
from __future__ import annotations

import functools
import os

import numpy as np
from PIL import Image

COLOUR = ["astronaut", "cat", "chelsea", "hubble_deep_field", "immunohistochemistry", "retina", "coffee", "rocket"]
GREY = ["brick", "camera", "cell", "clock", "coins", "grass", "gravel", "moon", "page", "text"]
HELDOUT = ("coffee", "rocket", "camera")   # photo eval crops come from these alone
VAL = ("motorcycle", "gradio:media_assets/images/tower.jpg", "gradio:media_assets/images/cheetah.jpg",
       "gradio:media_assets/images/lion.jpg", "gradio:test_data/cheetah2.jpg")


def _load(name: str) -> np.ndarray | None:
    if name == "grace_hopper":
        import matplotlib.cbook  # lazy: matplotlib: only for plots, and slow to import
        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            return np.asarray(Image.open(f).convert("RGB"))
    if name.startswith("gradio:"):
        import gradio  # lazy: gradio: only for its bundled sample pictures
        try:
            return np.asarray(Image.open(os.path.join(os.path.dirname(gradio.__file__), name[7:])).convert("RGB"))
        except OSError:  # another gradio version without this asset
            return None
    import skimage.data  # lazy: scikit-image: only for its sample photographs
    try:
        im = np.asarray(skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)())
    except Exception:  # an image that would need a download: skip it
        return None
    if im.ndim == 2:
        im = np.repeat(im[..., None], 3, axis=2)
    return im[..., :3].astype(np.uint8)


@functools.lru_cache(maxsize=2)
def photos(split: str = "train") -> tuple[np.ndarray, ...]:
    """The photos of a split ("train", "heldout" or "val") as (H, W, 3) uint8 arrays."""
    if split not in ("train", "heldout", "val"):
        raise ValueError(f"split is 'train', 'heldout' or 'val', got {split!r}")
    if split == "val":
        names = list(VAL)
    else:
        names = [n for n in COLOUR + GREY + ["grace_hopper"] if (n in HELDOUT) == (split == "heldout")]
    return tuple(im for im in map(_load, names) if im is not None)


def random_crops(n: int, rng: np.random.Generator, split: str = "train", size: int = 64,
                 min_scale: float = 0.25, rotate: bool = False) -> np.ndarray:
    """(n, size, size, 3) uint8 crops; each image is first downscaled by a random factor in
    [min_scale, 1] (so both fine and coarse textures appear), then cropped and maybe flipped;
    with `rotate`, also turned by a random multiple of 90 degrees (8 orientations in all)."""
    ims = photos(split)
    out = np.empty((n, size, size, 3), np.uint8)
    for i in range(n):
        im = ims[rng.integers(len(ims))]
        s = rng.uniform(min_scale, 1.0) if min_scale < 1 else 1.0
        h, w = im.shape[:2]
        ch, cw = min(h, int(size / s)), min(w, int(size / s))   # crop at source scale, then resize
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = im[y:y + ch, x:x + cw]
        if crop.shape[:2] != (size, size):
            crop = np.asarray(Image.fromarray(crop).resize((size, size), Image.BICUBIC))
        crop = crop[:, ::-1] if rng.random() < 0.5 else crop
        out[i] = np.rot90(crop, int(rng.integers(4))) if rotate else crop
    return out


def heldout_crops(n: int = 64, seed: int = 0, split: str = "heldout") -> np.ndarray:
    """Fixed evaluation crops at the photos' native scale (split "val" for choosing settings)."""
    return random_crops(n, np.random.default_rng(seed), split, min_scale=1.0)
