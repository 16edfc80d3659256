"""The training scenes of the diffusion stages, encoded once: the frozen autoencoder and the cached
latents (standardised per channel by the autoencoder's statistics) of scenes 0..n-1 with their
captions and boxes."""
from __future__ import annotations

import json
import multiprocessing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..data.images import from_uint8
from ..data.shapes import sample_scene
from ..pipelines.common import encode_latents


@dataclass
class Latents:
    vae: AutoencoderKL          # frozen, on the training device
    latents: torch.Tensor       # (N, C, h, w) float32, on the training device
    meta: list[dict]            # per scene: caption, boxes [{"label", "box"}], form

    @property
    def channels(self) -> int:
        return self.vae.config.latent_channels

    @property
    def device(self) -> torch.device:
        return self.latents.device


def load_latents(cfg, device, out: Path) -> Latents:
    """The autoencoder `cfg.autoencoder` and the latents of `cfg.num_scenes` scenes, from
    `cfg.latent_cache` or <out>/latents.safetensors (made there, in `cfg.workers` processes, if absent)."""
    vae = AutoencoderKL.from_pretrained(cfg.autoencoder).float().eval().requires_grad_(False).to(device)
    latents, meta = build_latent_cache(vae, cfg.num_scenes, Path(cfg.latent_cache or out / "latents.safetensors"),
                                       workers=cfg.workers)
    return Latents(vae, latents.to(device), meta)


def _render_chunk(start_stop: tuple[int, int]) -> list:
    return [sample_scene(s) for s in range(*start_stop)]


@torch.no_grad()
def build_latent_cache(vae: AutoencoderKL, n: int, path: Path, batch: int = 256,
                       workers: int = 1) -> tuple[torch.Tensor, list[dict]]:
    """Render scenes 0..n-1 (in `workers` processes), encode them once; cached at `path` (safetensors + json)."""
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if len(meta) == n:
            return load_file(path)["latents"].float(), meta
    lat = []
    meta = []
    chunks = [(i, min(n, i + batch)) for i in range(0, n, batch)]
    pool = None
    if workers > 1:
        pool = multiprocessing.get_context("fork").Pool(workers)
    rendered = pool.imap(_render_chunk, chunks) if pool else map(_render_chunk, chunks)
    for scenes in tqdm(rendered, total=len(chunks), desc="encoding scenes"):
        x = from_uint8(np.stack([s.image for s in scenes])).to(next(vae.parameters()).device)
        lat.append(encode_latents(vae, x).half())
        meta += [{"caption": s.caption, "boxes": s.boxes, "form": s.form} for s in scenes]
    if pool:
        pool.close()
    latents = torch.cat(lat).contiguous()  # (N, C, h, w)
    save_file({"latents": latents}, path)
    meta_path.write_text(json.dumps(meta))
    return latents.float(), meta
