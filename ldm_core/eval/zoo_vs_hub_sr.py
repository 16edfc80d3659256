"""bsr_sr, the paper's original super-resolution checkpoint as converted here, against the diffusers
team's own conversion of the same weights, CompVis/ldm-super-resolution-4x-openimages.

Online (a network; `python -m ldm_core.eval zoo-vs-hub bsr_sr`, wired in ldm_core/eval/zoo_vs_hub.py):
`compare()` loads both catalog entries through the studio (the hub's fp16 safetensors at the pinned
commit; sr_bsr.zip from ommer-lab.com, read safely and converted), then reports
  - weights: each hub tensor against ours rounded to fp16 (the hub copy is fp16): equal bit for bit
    when the conversion is right;
  - pixels: the studio's two entries on one input, seed and step count (DPM++ 2M: a sampler built from
    the betas alone), and the same with our weights rounded to fp16 first: identical when right.
DDIM differs on purpose: the hub copy says set_alpha_to_one=True, while CompVis' own DDIM sampler
(ldm/models/diffusion/ddim.py make_schedule) takes alphas_cumprod[0] at the last step, as ours does.

Offline (tests/test_zoo_concat.py): `hub_spec()` is the hub mirror (ldm_core.hub_mirror) at widths
the original modules can have (GroupNorm(32) everywhere: the tiny hub mirror's VQ has 16 channels in
16 groups, which no original first stage has), everything else as published; `original_from_hub()`
writes its weights back into the original key layout (ldm_core.zoo.mirror_concat) as a Lightning
.ckpt with bsr_sr's real config at those widths.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from ..catalog import Catalog
from ..hub_mirror import LDM_SUPERRES
from ..options import DPM_2M
from ..pipelines.superres import SuperResPipeline
from ..stack import ModelStack
from ..tasks.superres import SuperResRequest
from ..zoo.mirror import original_state_dict, shrunk_config, write_lightning_ckpt
from ..zoo.mirror_concat import original_from_diffusers

HUB, ZOO_NAME = "ldm-super-resolution-4x-openimages", "bsr_sr"
HUB_WIDTHS = {"unet/config.json": {"block_out_channels": [32, 64, 64, 128]},
              "vqvae/config.json": {"block_out_channels": [32, 64, 128], "num_vq_embeddings": 64}}


# ------------------------------------------------------------------ offline: the hub mirror, in the original layout
def hub_spec():
    """LDM_SUPERRES with its UNet and VQ at HUB_WIDTHS (write it with ldm_core.hub_mirror.write_mirror,
    scale="full": the configs are used as given)."""
    return dataclasses.replace(LDM_SUPERRES, configs={k: {**v, **HUB_WIDTHS.get(k, {})}
                                                      for k, v in LDM_SUPERRES.configs.items()})


def hub_widths_config() -> dict:
    """bsr_sr's real config (models/ldm/bsr_sr/config.yaml) at HUB_WIDTHS: model_channels 32, ch 32,
    n_embed 64, and num_head_channels 32 (the hub's attention_head_dim; the real config's too)."""
    cfg = shrunk_config(ZOO_NAME)
    cfg["model"]["params"]["unet_config"]["params"]["num_head_channels"] = 32
    return cfg


def original_from_hub(unet, vae, folder) -> tuple[Path, Path, dict, dict]:
    """The hub copy's UNet2DModel and VQModel as an original bsr_sr checkpoint: `folder`/model.ckpt
    (Lightning format) and `folder`/bsr_sr.yaml. Returns (ckpt, config path, state dict, config)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = hub_widths_config()
    sd = original_from_diffusers(unet, vae, cfg, original_state_dict(cfg, 0))
    (folder / "bsr_sr.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    ckpt = write_lightning_ckpt(folder / "model.ckpt", sd, global_step=1, epoch=1)
    return ckpt, folder / "bsr_sr.yaml", sd, cfg


# ------------------------------------------------------------------ online: the real files
def sample_input(side: int = 64, seed: int = 0) -> Image.Image:
    """A deterministic low-resolution input: smooth colour ramps, a few discs and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    a = np.stack([x, y, 1 - x * y], -1) * 200 + 20
    for cy, cx, r in rng.uniform(0.1, 0.9, (4, 3)) * [1, 1, 0.3]:
        a[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    return Image.fromarray((a + rng.normal(0, 4, a.shape)).clip(0, 255).astype(np.uint8))


def weight_report(hub, ours) -> dict:
    """Per component: tensors compared, how many equal ours rounded to the hub's dtype, the largest difference."""
    out = {}
    for comp in ("unet", "vae"):
        a, b = getattr(hub, comp).state_dict(), getattr(ours, comp).state_dict()
        if a.keys() != b.keys():
            out[comp] = {"error": f"different parameters: {sorted(a.keys() ^ b.keys())[:4]}"}
            continue
        same = sum(torch.equal(v.half().float(), b[k].half().float()) for k, v in a.items())
        diff = max(float((v.float() - b[k].float()).abs().max()) for k, v in a.items())
        out[comp] = {"tensors": len(a), "equal_at_fp16": same, "max_abs_diff": diff}
    return out


def _rounded(pipe: SuperResPipeline, scheduler) -> SuperResPipeline:
    """A copy of `pipe` with its weights rounded to fp16 (kept in their dtype) and `scheduler`."""
    unet, vae = copy.deepcopy(pipe.unet), copy.deepcopy(pipe.vae)
    for m in (unet, vae):
        for t in m.state_dict().values():
            if t.is_floating_point():
                t.copy_(t.half().to(t.dtype))
    return SuperResPipeline(vae=vae, unet=unet, scheduler=scheduler)


def compare(steps: int = 20, seed: int = 0, side: int = 64, catalog=None, out=None, device=None) -> dict:
    """Both entries through the studio (downloading what is missing); returns and writes the report
    (`equal`: every weight equal at fp16 and the fp16-rounded run's pixels identical to the hub's)."""
    stack = ModelStack(Catalog.load(catalog), device=device)
    hub, ours = stack.load(HUB), stack.load(ZOO_NAME)
    low = sample_input(side, seed)
    report = {"weights": weight_report(hub, ours), "steps": steps, "seed": seed, "input": f"{side}x{side}"}
    a, b = (np.asarray(stack.run(SuperResRequest(image=low, model=m, steps=steps, seed=seed, sampler=DPM_2M,
                                                         speedups="none"))
                       .images[0], dtype=int) for m in (HUB, ZOO_NAME))
    report["studio_max_pixel_diff"] = int(np.abs(a - b).max())
    with torch.inference_mode():
        c = np.asarray(_rounded(ours, hub.scheduler)(low, num_inference_steps=steps, seeds=[seed], sampler=DPM_2M)
                       .images[0], dtype=int)
    report["fp16_rounded_max_pixel_diff"] = int(np.abs(a - c).max())
    w = report["weights"]
    report["equal"] = (all(v.get("equal_at_fp16") == v.get("tensors") for v in w.values())
                       and report["fp16_rounded_max_pixel_diff"] == 0)
    folder = Path(out or Path("outputs") / "eval" / "zoo-vs-hub-bsr_sr")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    Image.fromarray(np.concatenate([a, c], 1).astype(np.uint8)).save(folder / "hub-vs-zoo.png")
    print(json.dumps(report, indent=2))
    return report
