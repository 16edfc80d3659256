"""Regional prompts: each box of the image guided by a prompt of its own (MultiDiffusion,
Bar-Tal et al. 2023, its region-based generation), for any text-conditioned UNet.

At every step the UNet predicts the noise once for the base prompt and once for each region's
prompt, all in one batch, and the predictions are combined pixel by pixel on the latent grid:

    eps = sum_i m_i * eps_i / sum_i m_i

where m_i is region i's box on the latent grid (its cells' coverage, feathered by one latent pixel)
and the base prompt's mask is the whole image, weighted BASE_INSIDE where the boxes cover it and 1
elsewhere. BASE_INSIDE is 0: inside a box its own prompt alone guides, the base prompt only across the
feathered edge. (MultiDiffusion's own weights, 1 everywhere, blend the two half and half inside a box,
which on the built-in Shapes model mixes their colours: a red circle and a blue square make magenta
shapes; 0.25 still turns them purple.) The unconditional prediction (the negative prompt) is computed
once; since the masks sum to one, guidance applied to the combined prediction is guidance applied
region by region:
    uncond + s (sum_i w_i eps_i - uncond) = sum_i w_i (uncond + s (eps_i - uncond)).
This is the model function the denoising loop calls, so every sampler works.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import Model

BASE_INSIDE = 0.0      # the base prompt's weight inside a box (1 outside): there the box's own prompt alone guides
FEATHER = 1            # latent pixels a box's edge is softened over (0: the cells it covers, partly at the edge)
MAX_REGIONS = 8

Box = tuple[float, float, float, float]     # x0, y0, x1, y1, fractions of the image


def check_regions(regions) -> None:
    """A clear ValueError when a region is not (prompt, (x0, y0, x1, y1)) with 0 <= x0 < x1 <= 1."""
    if len(regions) > MAX_REGIONS:
        raise ValueError(f"{len(regions)} regions given; at most {MAX_REGIONS} are supported")
    for i, (prompt, box) in enumerate(regions, 1):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"region {i}: its prompt is empty")
        if len(box) != 4:
            raise ValueError(f"region {i}: box must be four numbers [x0, y0, x1, y1], got {box}")
        x0, y0, x1, y1 = box
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise ValueError(f"region {i}: box must lie in [0, 1] with x0 < x1 and y0 < y1, got {box}")


def _coverage(lo: float, hi: float, n: int) -> torch.Tensor:
    """(n,) the share of each of n cells along a side that [lo, hi) (fractions) covers."""
    edges = torch.arange(n + 1, dtype=torch.float64) / n
    return ((torch.minimum(edges[1:], torch.tensor(hi)) - torch.maximum(edges[:-1], torch.tensor(lo))) * n).clamp(0, 1)


def box_mask(box: Box, height: int, width: int, feather: int = FEATHER) -> torch.Tensor:
    """(h, w) a box's weight on an h x w latent grid: each cell's covered share, then averaged over
    (2 feather + 1)^2 cells, so the edge ramps over a latent pixel each side."""
    x0, y0, x1, y1 = box
    m = _coverage(y0, y1, height)[:, None] * _coverage(x0, x1, width)[None, :]     # (h, w)
    if feather:
        k = 2 * feather + 1
        m = F.avg_pool2d(m[None, None], k, stride=1, padding=feather, count_include_pad=False)[0, 0]
    return m.float()


def region_masks(boxes: list[Box], height: int, width: int, base_inside: float = BASE_INSIDE,
                 feather: int = FEATHER) -> torch.Tensor:
    """(1 + R, h, w) the weights of the base prompt (first) and of each region, summing to 1 at
    every latent pixel: the base prompt's is 1 outside the boxes and `base_inside` inside them."""
    regions = torch.stack([box_mask(b, height, width, feather) for b in boxes])        # (R, h, w)
    base = 1 - (1 - base_inside) * regions.amax(0)                                     # (h, w)
    masks = torch.cat([base[None], regions])                                           # (1 + R, h, w)
    return masks / masks.sum(0, keepdim=True)


def regional_model(model: Model, masks: torch.Tensor, do_cfg: bool) -> Model:
    """The denoising loop's model function over prompts batched as [uncond (with guidance); base;
    region 1; ...; region R] (`model`, whose conditioning is laid out so), returning what the loop
    expects: [uncond; combined] with guidance, the combined prediction without. `masks`: (1 + R, h, w)."""
    n = masks.shape[0]

    def combined(x: torch.Tensor, t) -> torch.Tensor:
        uncond_x, cond_x = x.chunk(2) if do_cfg else (None, x)                       # (B, C, h, w) each
        parts = [uncond_x] * do_cfg + [cond_x] * n
        eps = model(torch.cat(parts), t).chunk(len(parts))                            # (B, C, h, w) each
        conds = torch.stack(eps[do_cfg:])                                              # (1 + R, B, C, h, w)
        w = masks.to(conds.device, conds.dtype)[:, None, None]                         # (1 + R, 1, 1, h, w)
        mixed = (w * conds).sum(0)                                                     # (B, C, h, w)
        return torch.cat([eps[0], mixed]) if do_cfg else mixed
    return combined


def regional_conditioning(cond: torch.Tensor, region_cond: torch.Tensor, do_cfg: bool) -> torch.Tensor:
    """The text conditioning batched as `regional_model` reads it: `cond` is (2B, L, D) [uncond; base]
    with guidance, (B, L, D) without; `region_cond` (R, L, D), one per region, repeated for each image."""
    b = cond.shape[0] // (2 if do_cfg else 1)
    regions = [r[None].expand(b, *r.shape) for r in region_cond]                      # (B, L, D) each
    return torch.cat([cond, *regions])                                                 # ((2 or 1) B + R B, L, D)
