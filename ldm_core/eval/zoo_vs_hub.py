"""The paper's original checkpoint converted here against the diffusers team's copy of the same
weights on the hub: the same request (prompt, seeds, steps, sampler, guidance, size) through the studio,
pixel for pixel.

    python -m ldm_core.eval zoo-vs-hub txt2img-large [--steps 50 --seeds 0 1 --device cpu]
    python -m ldm_core.eval zoo-vs-hub bsr_sr [--steps 20 --seeds 0]     (ldm_core/eval/zoo_vs_hub_sr.py)

Downloads both the first time (txt2img-large: the 5.7 GB original .ckpt from ommer-lab.com,
converted once; ldm-text2im-large-256: 6.2 GB of fp32 pickles from the hub), then writes
report.md / results.json / grid.png (zoo row above hub row) under --out. Exit status 1 when any
pixel differs by more than --tolerance (0: identical; fp16 on a GPU may need 1-2). Offline, point
LDM_ZOO_URL at a mirror of the zoo file and the Hugging Face cache at a copy of the hub model
(tests/test_zoo_text.py does, with ldm_core.zoo.mirror_bert).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ..catalog import Catalog
from ..stack import ModelStack
from ..tasks import TASKS
from . import zoo_vs_hub_sr

PROMPT = "a virus monster is playing guitar, oil on canvas"    # README "Text-to-Image"


@dataclass(frozen=True)
class Pair:
    hub: str                                   # the catalog name of the hub copy
    request: Callable                          # (model, seed, args) -> a task request


def _text2img(model: str, seed: int, a):
    return TASKS["text2img"].request(prompt=a.prompt, model=model, seed=seed, steps=a.steps, sampler="DDIM",
                                     guidance_scale=a.guidance, width=a.size[0], height=a.size[1],
                                     speedups="none")   # a conversion check: the exact UNet


PAIRS = {"txt2img-large": Pair("ldm-text2im-large-256", _text2img)}


def compare(stack: ModelStack, zoo_name: str, a) -> tuple[list[dict], list[np.ndarray]]:
    """Each seed's image from the zoo entry and the hub entry, and how far apart their pixels are."""
    pair, rows, images = PAIRS[zoo_name], [], []
    for seed in a.seeds:
        zoo_img, hub_img = (np.asarray(stack.run(pair.request(m, seed, a)).images[0].convert("RGB"), dtype=np.int16)
                            for m in (zoo_name, pair.hub))
        diff = np.abs(zoo_img - hub_img)
        rows.append({"seed": seed, "size": list(zoo_img.shape[:2]), "max_abs_diff": int(diff.max()),
                     "mean_abs_diff": float(diff.mean()), "pixels_differing": int((diff.max(-1) > 0).sum())})
        images += [zoo_img, hub_img]
    return rows, images


def _grid(images: list[np.ndarray]) -> Image.Image:
    zoo, hub = np.concatenate(images[0::2], axis=1), np.concatenate(images[1::2], axis=1)
    return Image.fromarray(np.concatenate([zoo, hub], axis=0).astype(np.uint8))


def task(a) -> None:
    if a.name == zoo_vs_hub_sr.ZOO_NAME:     # bsr_sr: weights and pixels, ldm_core/eval/zoo_vs_hub_sr.py
        if not zoo_vs_hub_sr.compare(a.steps, a.seeds[0], catalog=a.catalog, out=a.out)["equal"]:
            raise SystemExit(1)
        return
    if a.name not in PAIRS:
        raise SystemExit(f"zoo-vs-hub: no hub copy known for {a.name!r} (known: {', '.join(PAIRS)}, "
                         f"{zoo_vs_hub_sr.ZOO_NAME})")
    stack = ModelStack(Catalog.load(a.catalog), device=a.device)
    rows, images = compare(stack, a.name, a)
    worst = max(r["max_abs_diff"] for r in rows)
    ok = worst <= a.tolerance
    lines = [f"## {a.name} (zoo, converted here) vs {PAIRS[a.name].hub} (the hub's diffusers copy)", "",
             f"prompt {a.prompt!r}, {a.steps} DDIM steps, guidance {a.guidance:g}, device {stack.device}, "
             f"{stack.dtype}", "",
             "| seed | size | max abs diff | mean abs diff | pixels differing |", "|---|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['size'][1]}x{r['size'][0]} | {r['max_abs_diff']} | {r['mean_abs_diff']:.4f} | "
              f"{r['pixels_differing']} |" for r in rows]
    lines += ["", f"**{'the same pixels' if ok else 'DIFFERENT'}** (worst {worst} / 255, tolerance {a.tolerance})"]
    out = Path(a.out or f"outputs/eval/zoo-vs-hub-{a.name}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"model": a.name, "hub": PAIRS[a.name].hub, "ok": ok,
                                                  "tolerance": a.tolerance, "runs": rows}, indent=2))
    _grid(images).save(out / "grid.png")
    print("\n".join(lines) + f"\n\nwritten to {out}/")
    if not ok:
        raise SystemExit(1)


def add_arguments(p) -> None:
    p.add_argument("name", help=f"zoo model ({', '.join(PAIRS)}, {zoo_vs_hub_sr.ZOO_NAME})")
    p.add_argument("--catalog", default=None, help="catalog file (default: models/catalog.toml)")
    p.add_argument("--prompt", default=PROMPT)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--guidance", type=float, default=5.0, help="the same for both (their catalog defaults differ)")
    p.add_argument("--size", type=int, nargs=2, default=[256, 256], metavar=("WIDTH", "HEIGHT"))
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best one here)")
    p.add_argument("--tolerance", type=int, default=0, help="largest pixel difference (0-255) still a pass")
