"""What the unconditional (paper §4.2) and class-conditional (§4.1) stages share: a latent cache of
any scene renderer, their sampler, their export and their run of `diffusion.fit`'s machinery.

The training loop is `diffusion.py`'s (`_Diffusion` + `step_loop`: min-SNR loss, EMA, Budget,
resume, checkpoints); only the export differs, because these folders hold no text encoder: the
unconditional one a plain `UNet2DModel`, the class-conditional one a `ClassEmbedder`
(`ldm_core.pipelines.class_embedder`) whose one context token the UNet reads through
cross-attention, as the paper's cin256 models do. During training the embedder sits behind
`EmbedderAsEncoder`, which gives it a text encoder's `(hidden_states,)` return.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel, UNet2DModel
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..data.images import from_uint8, save_grid, to_uint8
from ..options import DEFAULT_SAMPLER
from ..pipelines.class_embedder import ClassEmbedder
from ..pipelines.common import denoise, make_generators, make_scheduler, per_image_noise
from ..pipelines.latents import decode_latents, encode_latents, latent_shape
from .common import ensure_dir, save_json
from .diffusion import DiffusionConfig, Stage, Weights, _Diffusion, fit
from .latents import Latents


class EmbedderAsEncoder(torch.nn.Module):
    """A `ClassEmbedder` seen as a text encoder by `diffusion.py`: labels (B,) -> ((B, 1, D),)."""

    def __init__(self, embedder: ClassEmbedder):
        super().__init__()
        self.embedder = embedder

    def forward(self, labels: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.embedder(labels),)


def build_unet2d(channels, layers_per_block: int = 1, head_dim: int = 32, latent_channels: int = 4) -> UNet2DModel:
    """The unconditional UNet: self-attention only at the two lower resolutions (as text2img's)."""
    n = len(channels)
    return UNet2DModel(sample_size=16, in_channels=latent_channels, out_channels=latent_channels,
                       block_out_channels=tuple(channels), layers_per_block=layers_per_block,
                       down_block_types=("DownBlock2D",) + ("AttnDownBlock2D",) * (n - 1),
                       up_block_types=("AttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
                       attention_head_dim=head_dim, norm_num_groups=32)


# ------------------------------------------------------------------ latent cache

@torch.no_grad()
def build_cache(vae: AutoencoderKL, n: int, path: Path, render: Callable[[int], tuple[np.ndarray, dict]],
                batch: int = 256) -> tuple[torch.Tensor, list[dict]]:
    """Images render(0..n-1) encoded once (normalised latents, fp16 on disk) with their meta; cached
    at `path` (+ .json), reused when it holds n scenes."""
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if len(meta) == n:
            return load_file(path)["latents"].float(), meta
    lat, meta = [], []
    for i in tqdm(range(0, n, batch), desc="encoding scenes"):
        rendered = [render(k) for k in range(i, min(n, i + batch))]
        x = from_uint8(np.stack([im for im, _ in rendered])).to(next(vae.parameters()).device)
        lat.append(encode_latents(vae, x).half())
        meta += [m for _, m in rendered]
    latents = torch.cat(lat).contiguous()
    save_file({"latents": latents}, path)
    meta_path.write_text(json.dumps(meta))
    return latents.float(), meta


def load_vae(autoencoder: str, device="cpu") -> AutoencoderKL:
    return AutoencoderKL.from_pretrained(autoencoder).float().eval().requires_grad_(False).to(device)


# ------------------------------------------------------------------ sampling

@torch.no_grad()
def sample_images(vae, unet, scheduler_config, seeds: list[int], labels: list[int] | None = None,
                  embedder: ClassEmbedder | None = None, guidance: float = 1.0, steps: int = 25,
                  sampler: str = DEFAULT_SAMPLER, batch: int = 32, size: int = 64) -> np.ndarray:
    """(N, size, size, 3) uint8 samples, image i from seeds[i] alone (and class labels[i] with an
    embedder; guidance > 1 runs classifier-free guidance against the embedder's null class)."""
    device = next(unet.parameters()).device
    dtype = next(unet.parameters()).dtype
    out = []
    for i in range(0, len(seeds), batch):
        chunk = list(seeds[i:i + batch])
        sched = make_scheduler(scheduler_config, sampler)
        sched.set_timesteps(steps, device=device)
        gens = make_generators(chunk)
        x = per_image_noise(latent_shape(vae, len(chunk), size, size), gens, device, dtype) * sched.init_noise_sigma
        g = 1.0
        if embedder is None:
            def model(z, t):
                return unet(z, t).sample
        else:
            lab = torch.tensor(labels[i:i + batch], device=device)
            ctx = embedder(lab).to(dtype)                               # (B, 1, D)
            if guidance > 1.0:
                if embedder.config.null_class is None:
                    raise ValueError("guidance needs a model trained with a null class")
                ctx = torch.cat([embedder(torch.full_like(lab, embedder.config.null_class)).to(dtype), ctx])
                g = guidance

            def model(z, t):
                return unet(z, t, encoder_hidden_states=ctx).sample
        z = denoise(model, sched, x, sched.timesteps, g, gens, None)
        out.append(to_uint8(decode_latents(vae, z.to(next(vae.parameters()).dtype))))
    return np.concatenate(out)


# ------------------------------------------------------------------ export

def export_folder(dest: Path, pipeline_class: str, w: Weights, autoencoder: str, fp16: bool = True) -> None:
    """A diffusers-format folder: unet/, scheduler/, class_embedder/ (with an embedder) and
    model_index.json; the autoencoder is referenced (`_shared`), not copied."""
    dest = ensure_dir(dest)
    dtype = torch.float16 if fp16 else torch.float32
    copy.deepcopy(w.unet).to(dtype).save_pretrained(dest / "unet", safe_serialization=True)
    index = {"_class_name": pipeline_class, "vae": ["diffusers", "AutoencoderKL"],
             "unet": ["diffusers", type(w.unet).__name__]}
    if w.text_encoder is not None:
        emb = w.text_encoder.embedder if isinstance(w.text_encoder, EmbedderAsEncoder) else w.text_encoder
        copy.deepcopy(emb).to(dtype).save_pretrained(dest / "class_embedder", safe_serialization=True)
        index["class_embedder"] = ["ldm_core", "ClassEmbedder"]
    index.update(scheduler=["diffusers", "DDPMScheduler"], _shared={"vae": Path(autoencoder).name})
    w.scheduler.save_pretrained(dest / "scheduler")
    save_json(dest / "model_index.json", index)


def load_exported(folder: str | Path, autoencoder: str | None = None, dtype=torch.float32) -> dict:
    """An exported folder's parts (vae from `autoencoder` or the models/ folder `_shared` names),
    in `dtype`: {"vae", "unet", "scheduler", "class_embedder" (or None)}."""
    folder = Path(folder)
    index = json.loads((folder / "model_index.json").read_text())
    unet_cls = UNet2DConditionModel if index["unet"][1] == "UNet2DConditionModel" else UNet2DModel
    vae = load_vae(autoencoder or str(folder.parent / index["_shared"]["vae"]))
    emb = None
    if "class_embedder" in index:
        emb = ClassEmbedder.from_pretrained(folder / "class_embedder").to(dtype).eval()
    return {"vae": vae, "unet": unet_cls.from_pretrained(folder / "unet").to(dtype).eval(),
            "scheduler": DDPMScheduler.from_pretrained(folder / "scheduler"), "class_embedder": emb}


# ------------------------------------------------------------------ the run

class _Run(_Diffusion):
    """`diffusion._Diffusion` with this export and a grid of all the evaluation's samples."""

    def evaluate(self) -> None:
        if not self.acc.is_main_process:
            return
        t0 = time.monotonic()
        metrics, images = self.stage.evaluate(self.weights(), self.scenes)
        save_grid(images, self.out / "samples.png", cols=8, scale=3)
        step = self.ckpt.state["step"]
        self.log.add({"step": step, **metrics, "eval_s": time.monotonic() - t0})
        self.log.plot(self.out / "loss.png", keys=["loss"] + sorted(metrics))
        self.acc.print(f"step {step}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))

    def export(self, dest: Path) -> None:
        if self.acc.is_main_process:
            export_folder(dest, self.stage.pipeline, self.weights(), self.cfg.autoencoder)


def fit_model(cfg: DiffusionConfig, acc, out: Path, data: Latents, stage: Stage) -> None:
    """`diffusion.fit` with this stage's export (`stage.pipeline` is the pipeline's class name)."""
    fit(cfg, acc, out, data, stage, run_class=_Run)
