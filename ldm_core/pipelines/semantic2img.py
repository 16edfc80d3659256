"""Semantic synthesis (paper §4.3.2): a label map in, an image out.

Runs the paper's semantic_synthesis256/512 (converted from their original checkpoints,
`ldm_core/zoo`: VQModel + UNet + SpatialRescaler, 182 COCO-Stuff labels) and the built-in Shapes
World model (25 labels: background and the 24 object kinds). The map goes one-hot through the
model's `SpatialRescaler` to the latent grid and is concatenated after the noisy latent, as
ddpm.py's DiffusionWrapper does for `concat` conditioning (`torch.cat([x] + c_concat, dim=1)`).

Beyond the training size the UNet is applied to the larger latent as it is ("convolutional
sampling", §4.3.2: the paper's 512² model sampled at 1024×384), so any size the autoencoder and
the UNet's downsampling divide runs; one generator per image (batch-invariant seeds).
"""
from __future__ import annotations

import numpy as np
import torch
from diffusers import DiffusionPipeline
from PIL import Image

from .common import (
    DEFAULT_SAMPLER,
    PipelineOutput,
    StepCallback,
    denoise,
    make_generators,
    make_scheduler,
    per_image_noise,
    seeds_or_default,
)
from .latents import decode_latents, latent_shape, to_pil, vae_scale_factor
from ..requests import GREY_MODES   # a label PNG's modes: pixel values are class ids
from .unconditional import check_size_and_schedule

MAX_OFF_PALETTE = 0.25    # a painted map with more pixels this far from every paint colour is refused


def labels_from_image(img: Image.Image, n_classes: int, palette: list[list[int]] | None) -> np.ndarray:
    """A label map image -> (H, W) int64 class ids. Greyscale: the values are the ids; colour: each
    pixel's nearest paint colour of `palette` (the model's), refused when the image does not look
    painted with it (a photo, another palette)."""
    if img.mode in GREY_MODES:
        ids = np.asarray(img, dtype=np.int64)
        if ids.max() >= n_classes:
            bad = int((ids >= n_classes).mean() * 100)
            raise ValueError(f"the label map has class ids up to {int(ids.max())} ({bad} % of pixels); this model "
                             f"has {n_classes} classes (0..{n_classes - 1})")
        return ids
    if palette is None:
        raise ValueError("this model has no paint colours: give the label map as a greyscale PNG of class ids")
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32)                     # (H, W, 3)
    pal = torch.tensor(palette, dtype=torch.float32)                           # (K, 3)
    d = torch.cdist(torch.from_numpy(rgb.reshape(-1, 3)), pal)                 # (HW, K)
    dist, ids = d.min(1)
    off = float((dist > 60).float().mean())
    if off > MAX_OFF_PALETTE:
        raise ValueError(f"{off:.0%} of the label map's pixels are far from every class colour of this model: "
                         f"paint it with the model's palette, or give a greyscale PNG of class ids")
    return ids.reshape(rgb.shape[:2]).numpy()


def resize_labels(ids: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize (class ids are never blended)."""
    if ids.shape == (height, width):
        return ids
    im = Image.fromarray(ids.astype(np.int32), mode="I")
    return np.asarray(im.resize((width, height), Image.NEAREST), dtype=np.int64)


class SemanticPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "rescaler->unet->vae"

    def __init__(self, vae, unet, rescaler, scheduler):
        super().__init__()
        self.register_modules(vae=vae, unet=unet, rescaler=rescaler, scheduler=scheduler)
        self.published_scheduler_config = dict(scheduler.config)   # each call samples with a fresh scheduler

    @property
    def class_names(self) -> list[str]:
        n = self.rescaler.n_classes
        return list(self.rescaler.config.class_names or [str(i) for i in range(n)])

    @property
    def palette(self) -> list[list[int]] | None:
        return self.rescaler.config.palette

    def check_inputs(self, labels: torch.Tensor, height, width, steps, seeds, eta):
        mapped = self.rescaler.config.out_channels or self.rescaler.n_classes
        check_size_and_schedule(self.vae, self.unet, height, width, steps, seeds, eta, concat_channels=mapped)
        if self.rescaler.factor != vae_scale_factor(self.vae):
            raise ValueError(f"the rescaler shrinks maps {self.rescaler.factor}x, the autoencoder "
                             f"{vae_scale_factor(self.vae)}x: not one model")

    def encode_map(self, labels: torch.Tensor) -> torch.Tensor:
        """(H, W) ids -> (1, C', h, w): the conditioning concatenated to every image's latent."""
        one_hot = self.rescaler.one_hot(labels[None].to(self.device))               # (1, K, H, W)
        return self.rescaler(one_hot).to(self.unet.dtype)

    # Copied from ldm_core.pipelines.text2img.Text2ImgPipeline.prepare_latents
    def prepare_latents(self, scheduler, n, height, width, generators, dtype):
        shape = latent_shape(self.vae, n, height, width)
        return per_image_noise(shape, generators, self.device, dtype) * scheduler.init_noise_sigma  # (B, C, h, w)

    @torch.inference_mode()
    def __call__(self, label_map, height: int | None = None, width: int | None = None,
                 num_inference_steps: int = 50, seeds: list[int] | None = None, sampler: str = DEFAULT_SAMPLER,
                 eta: float = 0.0, callback: StepCallback | None = None, output_type: str = "pil") -> PipelineOutput:
        # 1. inputs: the map as class ids, at the output size
        seeds = seeds_or_default(seeds)
        if isinstance(label_map, Image.Image):
            label_map = labels_from_image(label_map, self.rescaler.n_classes, self.palette)
        ids = np.asarray(label_map)
        height, width = height or ids.shape[0], width or ids.shape[1]
        labels = torch.as_tensor(resize_labels(ids, width, height)).long()      # (H, W) at the output size
        self.check_inputs(labels, height, width, num_inference_steps, seeds, eta)
        scheduler = make_scheduler(self.published_scheduler_config, sampler)
        generators = make_generators(seeds)
        # 2. the map's conditioning, and the latents
        cond = self.encode_map(labels)                                            # (1, C', h, w)
        latents = self.prepare_latents(scheduler, len(seeds), height, width, generators, self.unet.dtype)
        cond = cond.expand(len(seeds), -1, -1, -1)
        # 3. denoising loop: the UNet sees [latent, map] (ddpm.py's concat order)
        scheduler.set_timesteps(num_inference_steps, device=self.device)
        latents = denoise(lambda x, t: self.unet(torch.cat([x, cond], 1), t).sample, scheduler, latents,
                          scheduler.timesteps, 1.0, generators, callback, eta)
        # 4. decode
        name, read = type(scheduler).__name__, {"label_map_classes": self.class_shares(labels)}
        if output_type == "latent":
            return PipelineOutput(latents, seeds, [], name, read)
        return PipelineOutput(to_pil(decode_latents(self.vae, latents.to(self.vae.dtype))), seeds, [], name, read)

    def class_shares(self, labels: torch.Tensor) -> dict[str, float]:
        """{class name: share of the map's pixels}, largest first: what the map was read as."""
        counts = torch.bincount(labels.flatten(), minlength=self.rescaler.n_classes)
        names = self.class_names
        return {names[i]: round(float(counts[i]) / labels.numel(), 4)
                for i in counts.argsort(descending=True).tolist() if counts[i] > 0}
