"""A classical (non-learned) detector for Shapes World images.

Every pixel of a render is a blend of white and one palette colour (the anti-aliasing
box filter is linear), so for colour c with "ink" u_c = 255 - c the pixel's ink
v = 255 - p equals alpha * u_c. The detector

1. assigns each inked pixel to the palette colour whose ink direction explains it best
   (smallest residual |v - alpha u_c|), which is robust to edges that fade into white;
2. labels connected components of confident pixels (alpha > 0.5) per colour;
3. gives every nearby pixel to its nearest component and measures that component's
   alpha mass and centroid (blur and noise leave both almost unchanged);
4. for each of the four shapes, derives the box that mass and centroid imply (using
   the renderer's own shape templates), renders that template (sharp and slightly
   blurred) and keeps the shape whose template fits the observed alpha best: the
   classical fill-ratio/moment test, done against the exact rendered shapes.

Ink that is far (> MAX_ANGLE) from every palette direction (black, grey, ...) is ignored.
On ground-truth renders this recovers colour, shape and the exact integer box of every
object (validated on thousands of scenes: `python -m ldm_core.eval detector`, which runs
`ldm_core.eval.detector.validate`). The judges built on it are in `judge.py`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from .shapes import CANVAS, COLORS, PALETTE, SHAPES, ShapeObject, draw_objects

INK = np.array([[255 - v for v in PALETTE[c]] for c in COLORS], dtype=np.float64)  # (6, 3)
INK_NORM2 = (INK ** 2).sum(1)  # (6,)
MIN_INK = 20.0        # pixels whose ink (max over channels) is below this are background
MAX_ANGLE = 14.0      # degrees: ink further than this from every palette direction is not an object
CORE_ALPHA = 0.5      # confident pixels that form components
MIN_AREA = 30.0       # components with less alpha mass (px) are noise: the smallest object has ~72
RING = 3              # pixels beyond the core that still count towards a component
MAX_TEMPLATE = 96     # largest template side rendered (bigger objects are clamped)
BLURS = (0.0, 0.8, 1.6)  # template blurs tried, so soft (e.g. generated) edges still fit


@dataclass
class Detection:
    color: str
    shape: str
    box: tuple[float, float, float, float]    # normalised [x0, y0, x1, y1], like the spec
    box_px: tuple[int, int, int, int]         # pixels, exclusive right/bottom edge
    area: float                               # alpha mass in pixels
    score: float                              # soft IoU of the fitted template, in [0, 1]

    @property
    def label(self) -> str:
        return f"{self.color} {self.shape}"

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box_px
        return ((x0 + x1) / 2, (y0 + y1) / 2)


def color_alpha(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel best palette index (H, W) and alpha for every colour (6, H, W)."""
    v = 255.0 - image.astype(np.float64)                        # (H, W, 3) ink
    alpha = np.einsum("hwc,kc->khw", v, INK) / INK_NORM2[:, None, None]  # (6, H, W)
    resid = ((v[None] - alpha[..., None] * INK[:, None, None]) ** 2).sum(-1)  # (6, H, W)
    resid[alpha <= 0] = np.inf
    best = resid.argmin(0)                                      # (H, W)
    off_palette = resid.min(0) > np.sin(np.radians(MAX_ANGLE)) ** 2 * (v ** 2).sum(-1)
    best[(v.max(-1) < MIN_INK) | off_palette] = -1
    return best, alpha


@lru_cache(maxsize=None)
def template(shape: str, size: int) -> tuple[np.ndarray, float, float, float]:
    """Renderer's alpha for one object at (0, 0): (alpha (s, s), mass, centroid x, centroid y)."""
    s = int(min(max(size, 1), MAX_TEMPLATE))
    if s <= CANVAS:
        img = draw_objects([ShapeObject("blue", shape, 0, 0, s)])[:s, :s]
        a = (255.0 - img[..., 2]) / INK[COLORS.index("blue"), 2]
    else:  # bigger than the canvas: scale the largest template (approximation)
        a0 = template(shape, CANVAS)[0]
        idx = (np.arange(s) * CANVAS // s)
        a = a0[idx][:, idx]
    a = np.clip(a, 0, 1)
    ys, xs = np.mgrid[:s, :s] + 0.5
    m = a.sum()
    return a, float(m), float((a * xs).sum() / m), float((a * ys).sum() / m)


def _size_for_mass(shape: str, mass: float) -> int:
    """Integer side whose template mass is closest to `mass`."""
    k = template(shape, 28)[1] / 28 ** 2
    s0 = int(np.clip(round(np.sqrt(max(mass, 1.0) / k)), 1, MAX_TEMPLATE))
    cands = range(max(1, s0 - 1), min(MAX_TEMPLATE, s0 + 1) + 1)
    return min(cands, key=lambda s: abs(template(shape, s)[1] - mass))


def _fit(shape: str, alpha: np.ndarray, mass: float, cx: float, cy: float):
    """Box implied by mass/centroid for `shape`, and the soft IoU of its template."""
    s = _size_for_mass(shape, mass)
    t, _, tx, ty = template(shape, s)
    x0, y0 = int(round(cx - tx)), int(round(cy - ty))
    canvas_t = np.zeros_like(alpha)
    # paste the template, clipped to the canvas
    H, W = alpha.shape
    sx0, sy0 = max(0, -x0), max(0, -y0)
    dx0, dy0 = max(0, x0), max(0, y0)
    dx1, dy1 = min(W, x0 + s), min(H, y0 + s)
    if dx1 > dx0 and dy1 > dy0:
        canvas_t[dy0:dy1, dx0:dx1] = t[sy0:sy0 + dy1 - dy0, sx0:sx0 + dx1 - dx0]
    a = np.clip(alpha, 0, 1)
    score = 0.0
    for sigma in BLURS:
        tb = ndimage.gaussian_filter(canvas_t, sigma) if sigma > 0 else canvas_t
        score = max(score, np.minimum(a, tb).sum() / max(np.maximum(a, tb).sum(), 1e-9))
    return (x0, y0, x0 + s, y0 + s), float(score)


def as_rgb_uint8(image) -> np.ndarray:
    """Accept uint8 or float ([0, 1] or [0, 255]) arrays, PIL images, grey or RGBA; return (H, W, 3) uint8."""
    x = np.asarray(image)
    if x.ndim == 2:
        x = np.stack([x] * 3, -1)
    if x.ndim != 3 or x.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W, 3) image, got shape {x.shape}")
    x = np.repeat(x, 3, -1) if x.shape[-1] == 1 else x[..., :3]
    if x.dtype != np.uint8:
        x = np.nan_to_num(x.astype(np.float64))
        x = x * 255.0 if x.max(initial=0) <= 1.0 else x
        x = np.clip(np.round(x), 0, 255).astype(np.uint8)
    return x


def detect(image, min_area: float = MIN_AREA) -> list[Detection]:
    """Detect palette-coloured shapes in a (64, 64, 3) uint8 image; never raises on odd content."""
    image = as_rgb_uint8(image)
    H, W = image.shape[:2]
    best, alpha = color_alpha(image)
    idx = np.arange(len(COLORS))[:, None, None]
    core = (best[None] == idx) & (alpha > CORE_ALPHA)             # (6, H, W)

    # connected components of confident pixels, per colour (ids 1.. across colours)
    comps = np.zeros((H, W), dtype=np.int32)                      # 0 = none
    comp_color: list[int] = []
    for k in range(len(COLORS)):
        lab, n = ndimage.label(core[k])
        comps[lab > 0] = lab[lab > 0] + len(comp_color)
        comp_color += [k] * n
    if not comp_color:
        return []

    # every pixel within RING of a core belongs to the nearest core's component
    dist, (iy, ix) = ndimage.distance_transform_edt(comps == 0, return_indices=True)
    owner = np.where(dist <= RING, comps[iy, ix], 0)              # (H, W)
    ids = np.arange(1, len(comp_color) + 1)
    own_alpha = np.clip(alpha[np.array(comp_color)[np.maximum(owner, 1) - 1], np.arange(H)[:, None],
                              np.arange(W)[None]], -0.5, 1.5)     # (H, W) alpha of the owner's colour
    masses = ndimage.sum(own_alpha, owner, ids)                   # (n,)
    ys, xs = np.mgrid[:H, :W] + 0.5

    dets: list[Detection] = []
    for cid, k, mass in zip(ids, comp_color, masses):
        if mass < min_area:
            continue
        a = np.where(owner == cid, own_alpha, 0.0)                # (H, W) this object's alpha
        cx, cy = float((a * xs).sum() / mass), float((a * ys).sum() / mass)
        fits = {sh: _fit(sh, a, mass, cx, cy) for sh in SHAPES}
        shape = max(fits, key=lambda sh: fits[sh][1])
        (x0, y0, x1, y1), score = fits[shape]
        box_px = (max(x0, 0), max(y0, 0), min(x1, W), min(y1, H))
        box = (box_px[0] / W, box_px[1] / H, box_px[2] / W, box_px[3] / H)
        dets.append(Detection(COLORS[k], shape, box, box_px, float(mass), score))  # type: ignore[arg-type]
    dets.sort(key=lambda d: (d.box_px[1], d.box_px[0]))
    return dets


def box_iou(a, b) -> float:
    """IoU of two [x0, y0, x1, y1] boxes (any common unit)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def degrade(image: np.ndarray, blur: float = 0.7, noise: float = 5 / 255, seed: int = 0) -> np.ndarray:
    """Mild degradation used to check robustness: Gaussian blur, then additive Gaussian noise."""
    x = image.astype(np.float64) / 255.0                          # (H, W, 3)
    if blur > 0:
        x = ndimage.gaussian_filter(x, sigma=(blur, blur, 0))
    if noise > 0:
        x = x + np.random.default_rng(seed).normal(0.0, noise, x.shape)
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def match(labels_a: list[str], boxes_a: list, labels_b: list[str], boxes_b: list) -> list[tuple[int, int, float]]:
    """One-to-one matching of two labelled box lists maximising IoU among same-label pairs.

    Returns (index in a, index in b, IoU) for every matched pair (IoU may be 0).
    """
    if not labels_a or not labels_b:
        return []
    iou = np.array([[box_iou(ba, bb) if la == lb else -1.0 for lb, bb in zip(labels_b, boxes_b)]
                    for la, ba in zip(labels_a, boxes_a)])  # (A, B)
    rows, cols = linear_sum_assignment(-iou)
    return [(int(r), int(c), float(iou[r, c])) for r, c in zip(rows, cols) if iou[r, c] >= 0]
