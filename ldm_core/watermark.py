"""An invisible watermark that `ldm_core` can read back: "made by Latent Diffusion Studio".

Why not the `invisible-watermark` package (imwatermark, the one Stable Diffusion uses): its
DWT-DCT coder refuses images of fewer than 256x256 pixels ("image too small"), and the studio's
built-in models make 64x64 images (tests: 32x32); it also pulls in opencv-python. So this
is a small equivalent in numpy, made for small images:

- the luma channel is cut into 8x8 blocks and each block's 2-D DCT is taken (as in JPEG);
- four low-frequency AC coefficients of every block carry one bit each by dithered
  quantisation index modulation (QIM, step `STEP`): the coefficient is moved to the
  nearest point of one of two interleaved lattices, shifted by a keyed pseudo-random dither;
- a tile of 2x4 blocks holds the 32 bits of the mark ("LDS1") once; the tile repeats over
  the whole image (a 64x64 image holds it 8 times, 256x256 128 times, 32x32 twice);
- clipping at black and white is handled by projecting a few times (embed, clip, repeat).

Reading sums every repetition softly (cos of the lattice phase) and compares with the mark.
A lossless copy decodes at the block grid it was made on; a cropped copy is searched over
the 64 grid offsets and 8 tile phases, with a stricter threshold for those 511 extra tries;
a square copy of another size is also tried resized back to 64x64 and 256x256 (the
built-in output sides). The change to the pixels is too small to see. It is a provenance
label, not a security feature: anyone who reads this file can strip or forge it.
The change's size and the measured limits (tests/test_watermark.py, `python -m
ldm_core.watermark --measure`): see docs/security.md.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .data.shapes import sample_scene

MARK = "LDS1"                          # 32 bits: Latent Diffusion Studio, mark version 1
BLOCK = 8
TILE = (2, 4)                          # blocks per tile (rows, columns)
COEFS = ((0, 1), (1, 0), (1, 1), (0, 2))  # DCT coefficients that carry bits (row, column frequency)
STEP = 12.0                            # QIM step in the orthonormal DCT domain (grey levels)
ALIGNED_MIN = 29                       # bits of 32 that must agree at the original grid (false positive ~1e-6)
SEARCH_MIN = 31                        # ... at any other of the 511 offsets/phases (~4e-6 over all of them)
_KEY = b"ldm-studio-watermark-v1"
_NSLOTS = TILE[0] * TILE[1] * len(COEFS)
_LUMA = np.array([0.299, 0.587, 0.114])


def _bits() -> np.ndarray:
    return np.unpackbits(np.frombuffer(MARK.encode("ascii"), np.uint8)).astype(np.int64)


def _dither() -> np.ndarray:
    h = hashlib.sha256(_KEY).digest()          # 32 bytes: one per slot
    return np.frombuffer(h, np.uint8).astype(np.float64) / 256.0 * STEP


def _dct_matrix(n: int = BLOCK) -> np.ndarray:
    k = np.arange(n)
    d = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d


_D = _dct_matrix()
_BASIS = np.stack([np.outer(_D[u], _D[v]) for u, v in COEFS])   # (K, 8, 8): coefficient k's pixel pattern
_BITS = _bits()
_DITHER = _dither()


def _coefs(y: np.ndarray) -> np.ndarray:
    """(h, w, K): the carrying DCT coefficients of each whole 8x8 block of `y`."""
    h, w = y.shape[0] // BLOCK, y.shape[1] // BLOCK
    blocks = y[:h * BLOCK, :w * BLOCK].reshape(h, BLOCK, w, BLOCK).transpose(0, 2, 1, 3)
    return np.einsum("hwij,kij->hwk", blocks, _BASIS)


def _slots(h: int, w: int, phase: tuple[int, int] = (0, 0)) -> np.ndarray:
    """(h, w, K) slot index (0..31) of every carrying coefficient."""
    by = (np.arange(h)[:, None, None] + phase[0]) % TILE[0]
    bx = (np.arange(w)[None, :, None] + phase[1]) % TILE[1]
    k = np.arange(len(COEFS))[None, None, :]
    return (by * TILE[1] + bx) * len(COEFS) + k


def luma(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., :3] @ _LUMA


def embed(image: Image.Image, iterations: int = 8) -> Image.Image:
    """A copy of `image` carrying the mark (RGB or RGBA; alpha kept). Images smaller than one
    tile (16x32 pixels) are returned unchanged."""
    mode = image.mode
    src = image if mode in ("RGB", "RGBA") else image.convert("RGB")
    arr = np.asarray(src).astype(np.float64)
    h, w = arr.shape[0] // BLOCK, arr.shape[1] // BLOCK
    if h < TILE[0] or w < TILE[1]:
        return image.copy()
    slots = _slots(h, w)
    bits = _BITS[slots]
    dither = _DITHER[slots]
    x = arr[:h * BLOCK, :w * BLOCK, :3].copy()
    for _ in range(iterations):
        c = _coefs(luma(x))
        off = dither + bits * STEP / 2
        target = STEP * np.round((c - off) / STEP) + off
        d = target - c
        if np.abs(d).max() < 0.05:
            break
        delta = np.einsum("hwk,kij->hiwj", d, _BASIS).reshape(h * BLOCK, w * BLOCK)
        x = np.clip(x + delta[..., None], 0.0, 255.0)   # same change on R, G, B: luma moves by exactly delta
    out = arr.copy()
    out[:h * BLOCK, :w * BLOCK, :3] = x
    return Image.fromarray(np.round(out).clip(0, 255).astype(np.uint8), src.mode)


@dataclass(frozen=True)
class Reading:
    mark: str | None           # MARK when found, else None
    matched: int               # bits of 32 that agree with MARK at the best grid offset and tile phase
    repetitions: int           # how many whole tiles were read there

    @property
    def found(self) -> bool:
        return self.mark is not None


def _read_at(y: np.ndarray, oy: int, ox: int, phases) -> tuple[int, tuple[int, int], int]:
    """(bits matched, tile phase, repetitions) at grid offset (oy, ox), best over `phases`."""
    c = _coefs(y[oy:, ox:])
    h, w = c.shape[:2]
    best = (-1, (0, 0), 0)
    if h < TILE[0] or w < TILE[1]:
        return best
    for phase in phases:
        slots = _slots(h, w, phase)
        soft = np.cos(2 * np.pi * (c - _DITHER[slots]) / STEP)    # +1: bit 0, -1: bit 1
        sums = np.bincount(slots.ravel(), soft.ravel(), minlength=_NSLOTS)
        matched = int(np.sum((sums < 0).astype(np.int64) == _BITS))
        if matched > best[0]:
            best = (matched, phase, (h // TILE[0]) * (w // TILE[1]))
    return best


SEARCH_SIDE = 256      # the offset search looks at the central 256x256 pixels at most (cost)
NATIVE_SIDES = (64, 256)  # the built-in models' output sides: a resized square copy is also tried at these


def read(image: Image.Image, search: bool = True) -> Reading:
    """Look for the mark: at the original block grid first; then (search=True) at every other
    grid offset and tile phase, as a cropped copy needs; then, for a square image of another
    side, resized back to each of NATIVE_SIDES."""
    rgb = image.convert("RGB")
    best = _read(rgb, search)
    if best.found or not search or rgb.width != rgb.height:
        return best
    for side in NATIVE_SIDES:
        if side != rgb.width:
            r = _read(rgb.resize((side, side), Image.BICUBIC if side > rgb.width else Image.BOX), True)
            if r.found:
                return r
    return best


def _read(rgb: Image.Image, search: bool) -> Reading:
    y = luma(np.asarray(rgb).astype(np.float64))
    matched, _, reps = _read_at(y, 0, 0, [(0, 0)])
    if matched >= ALIGNED_MIN:
        return Reading(MARK, matched, reps)
    best = Reading(None, matched, reps)
    if not search:
        return best
    if max(y.shape) > SEARCH_SIDE:   # a central window: enough repetitions, bounded cost
        top, left = max(0, (y.shape[0] - SEARCH_SIDE) // 2), max(0, (y.shape[1] - SEARCH_SIDE) // 2)
        y = y[top:top + SEARCH_SIDE, left:left + SEARCH_SIDE]
    phases = [(py, px) for py in range(TILE[0]) for px in range(TILE[1])]
    for oy in range(BLOCK):
        for ox in range(BLOCK):
            m, phase, reps = _read_at(y, oy, ox, phases if (oy, ox) != (0, 0) else phases[1:])
            if m > best.matched:
                best = Reading(MARK if m >= SEARCH_MIN else None, m, reps)
                if best.found:
                    return best
    return best


# ---------------------------------------------------------------- measuring its limits
def measure(n: int = 8, size: int = 64) -> dict[str, float]:
    """Fraction of Shapes World scenes (at `size`) whose mark is still read after each change."""


    def jpeg(im, q):
        b = io.BytesIO()
        im.save(b, "JPEG", quality=q)
        return Image.open(io.BytesIO(b.getvalue()))

    s = size

    def shift(im, levels):
        return Image.fromarray(np.clip(np.asarray(im).astype(int) + levels, 0, 255).astype(np.uint8))

    def noise(im, sigma):
        a = np.asarray(im) + np.random.default_rng(0).normal(0, sigma, (im.height, im.width, 3))
        return Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8))

    def resize(im, side):
        return im.resize((side, side), Image.BICUBIC)

    edits = {
        "lossless PNG copy": lambda im: im,
        "converted to RGBA and back": lambda im: im.convert("RGBA").convert("RGB"),
        "JPEG quality 95": lambda im: jpeg(im, 95),
        "JPEG quality 90": lambda im: jpeg(im, 90),
        "JPEG quality 75": lambda im: jpeg(im, 75),
        "JPEG quality 50": lambda im: jpeg(im, 50),
        "Gaussian noise sigma 2": lambda im: noise(im, 2),
        "cropped by 3 px on each side": lambda im: im.crop((3, 3, s - 3, s - 3)),
        "cropped to the left half": lambda im: im.crop((0, 0, s // 2, s)),
        "darker by 10 levels": lambda im: shift(im, -10),
        "brighter by 10 levels (white clips)": lambda im: shift(im, 10),
        "resized 2x up (bicubic)": lambda im: resize(im, 2 * s),
        "resized 2x up and back down": lambda im: resize(resize(im, 2 * s), s),
        "resized 4x up (bicubic)": lambda im: resize(im, 4 * s),
        "resized to half": lambda im: resize(im, s // 2),
        "resized to 90 %": lambda im: resize(im, int(s * .9)),
        "resized to 90 %, not square": lambda im: im.resize((int(s * .9), s), Image.BICUBIC),
        "flipped left-right": lambda im: im.transpose(Image.FLIP_LEFT_RIGHT),
        "rotated 90 degrees": lambda im: im.transpose(Image.ROTATE_90),
    }
    scenes = [Image.fromarray(sample_scene(50_000_000 + i).image).resize((s, s), Image.BICUBIC) for i in range(n)]
    marked = [embed(im) for im in scenes]
    out = {name: sum(read(f(m)).found for m in marked) / n for name, f in edits.items()}
    out["unmarked scenes read as marked (false positives)"] = sum(read(im).found for im in scenes) / n
    psnr = [10 * np.log10(255 ** 2 / np.mean((np.asarray(a, float) - np.asarray(b, float)) ** 2))
            for a, b in zip(scenes, marked)]
    out["PSNR of the marked image, dB (mean)"] = float(np.mean(psnr))
    return out


if __name__ == "__main__":
    import argparse
    import sys
    p = argparse.ArgumentParser(prog="python -m ldm_core.watermark", description="read or measure the watermark")
    p.add_argument("images", nargs="*")
    p.add_argument("--measure", action="store_true", help="measure what the mark survives (Shapes World scenes)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("-n", type=int, default=16)
    a = p.parse_args()
    if a.measure:
        for k, v in measure(a.n, a.size).items():
            print(f"{k:50s} {v:6.2f}")
    for path in a.images:
        r = read(Image.open(path))
        print(f"{path}: {'watermark ' + r.mark if r.found else 'no watermark'} ({r.matched}/32 bits)")
    sys.exit(0)
