"""The seam at a mask's border: how much inpainting and outpainting results jump in colour there.

For every pair of 4-neighbour pixels that straddles the mask's border (one repainted, one
kept), the colour step |a - b| (mean over RGB, 0-255). Reported for the result and for the
ground truth at the same pairs: the excess is the seam the repainting made. Measured on the
inpainting eval's held-out scenes (one object masked, `random_mask(..., "object")`) and on
outpainting (the scene's right quarter cut off and outpainted back), for each mask blur.

    python -m ldm_core.eval.seam --n 48 --blurs 0 2 4
"""
from __future__ import annotations

import argparse
import json
import random

import numpy as np
from PIL import Image

from ..data.masks import random_mask
from ..data.shapes import sample_scene
from ..stack import ModelStack
from ..tasks.inpaint import InpaintRequest
from .restore import INPAINT_SEED0


def border_pairs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(inside, outside) flat indices of the 4-neighbour pixel pairs across the border of `mask` (H, W) bool."""
    h, w = mask.shape
    idx = np.arange(h * w).reshape(h, w)
    ins, outs = [], []
    for a, b, ia, ib in ((mask[:, :-1], mask[:, 1:], idx[:, :-1], idx[:, 1:]),
                         (mask[:-1, :], mask[1:, :], idx[:-1, :], idx[1:, :])):
        cross = a != b
        ins += [np.where(a, ia, ib)[cross]]
        outs += [np.where(a, ib, ia)[cross]]
    return np.concatenate(ins), np.concatenate(outs)


def seam_step(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean colour step across the border of `mask` in `image` (H, W, 3) uint8."""
    i, o = border_pairs(mask)
    flat = image.reshape(-1, 3).astype(np.float64)
    return float(np.abs(flat[i] - flat[o]).mean()) if len(i) else 0.0


def cases(n: int) -> list[tuple[str, str, np.ndarray, np.ndarray, dict]]:
    """(kind, caption, ground truth, mask over the ground truth, request extras) for n scenes of each kind."""
    out = []
    for i in range(n):
        s = sample_scene(INPAINT_SEED0 + i)
        m = random_mask(s, random.Random(INPAINT_SEED0 + i), "object")
        out.append(("inpaint", s.caption, s.image, m, {}))
        cut = np.zeros(s.image.shape[:2], bool)
        cut[:, 48:] = True
        out.append(("outpaint", s.caption, s.image, cut, {"extend_right": 16}))
    return out


def measure(stack, blurs, n: int, model: str | None = None, steps: int = 25) -> dict:
    res: dict = {}
    for kind, caption, truth, mask, extra in cases(n):
        image = Image.fromarray(truth[:, :48] if extra else truth)
        m = None if extra else Image.fromarray((mask * 255).astype(np.uint8))
        for blur in blurs:
            out = stack.run(InpaintRequest(image=image, mask=m, prompt=caption, seed=INPAINT_SEED0, steps=steps,
                                           mask_blur=blur, model=model, **extra)).images[0]
            r = res.setdefault(f"{kind}, mask blur {blur:g}", {"result": [], "truth": []})
            r["result"].append(seam_step(np.asarray(out.convert("RGB")), mask))
            r["truth"].append(seam_step(truth, mask))
    return {k: {"n": len(v["result"]), "seam_result": float(np.mean(v["result"])),
                "seam_truth": float(np.mean(v["truth"])),
                "excess": float(np.mean(np.subtract(v["result"], v["truth"])))} for k, v in res.items()}


def table(results: dict) -> str:
    lines = ["| case | n | colour step across the border: result | ground truth | excess (the seam) |",
             "|---|---|---|---|---|"]
    lines += [f"| {k} | {v['n']} | {v['seam_result']:.2f} | {v['seam_truth']:.2f} | **{v['excess']:+.2f}** |"
              for k, v in results.items()]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m ldm_core.eval.seam", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=48, help="scenes of each kind")
    p.add_argument("--blurs", type=float, nargs="+", default=[0.0, 2.0, 4.0])
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--model", default=None)
    p.add_argument("--out", default=None, help="also write the results as JSON here")
    a = p.parse_args(argv)
    results = measure(ModelStack(device="cpu"), a.blurs, a.n, a.model, a.steps)
    print(table(results))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
