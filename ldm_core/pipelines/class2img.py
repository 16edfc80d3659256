"""Class-conditional latent diffusion (paper §4.1): ImageNet classes (or Shapes World object
kinds) in, images out.

As the paper's cin256 models: the class index -> `ClassEmbedder` -> one context token (B, 1, D)
-> the UNet's cross-attention. Classifier-free guidance where the model was trained with a null
class (cin256-v2: index 1000; the built-in model: its last class), the null class's token as the
unconditional branch, as the CompVis notebook samples it.
"""
from __future__ import annotations

import torch
from diffusers import DiffusionPipeline

from .common import (
    DEFAULT_SAMPLER,
    PipelineOutput,
    StepCallback,
    denoise,
    guided,
    make_generators,
    make_scheduler,
    per_image_noise,
    seeds_or_default,
)
from .latents import decode_latents, latent_shape, to_pil
from .unconditional import check_size_and_schedule


class ClassConditionalPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "class_embedder->unet->vae"

    def __init__(self, vae, unet, class_embedder, scheduler):
        super().__init__()
        self.register_modules(vae=vae, unet=unet, class_embedder=class_embedder, scheduler=scheduler)
        self.published_scheduler_config = dict(scheduler.config)

    @property
    def class_names(self) -> list[str]:
        """The names of the classes a user may ask for, by index."""
        return [self.class_embedder.name_of(i) for i in range(self.class_embedder.num_named_classes)]

    def class_index(self, label: str | int) -> int:
        """The index of a class given by its full label (as the model's class names hold it) or index."""
        if isinstance(label, int):
            return label
        names = self.class_names
        if label not in names:
            raise ValueError(f"this model has no class named {label[:60]!r}")
        return names.index(label)

    def check_inputs(self, labels, height, width, steps, guidance_scale, seeds, eta):
        check_size_and_schedule(self.vae, self.unet, height, width, steps, seeds, eta)
        if len(labels) != len(seeds):
            raise ValueError(f"{len(labels)} classes for {len(seeds)} images")
        n = self.class_embedder.num_named_classes
        bad = [c for c in labels if not 0 <= c < n]
        if bad:
            raise ValueError(f"class index {bad[0]} is not one of this model's classes 0-{n - 1}")
        if guided(guidance_scale) and self.class_embedder.config.null_class is None:
            raise ValueError("this model was trained without a null class, so classifier-free guidance cannot "
                             "run: set guidance to 1")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")

    def encode_classes(self, labels: list[int], do_cfg: bool) -> torch.Tensor:
        """Context tokens (B, 1, D), after the null class's (2B, 1, D) for guidance."""
        ids = torch.tensor(labels, device=self.device)
        cond = self.class_embedder(ids)                                   # (B, 1, D)
        if not do_cfg:
            return cond
        null = torch.full_like(ids, self.class_embedder.config.null_class)
        return torch.cat([self.class_embedder(null), cond])               # (2B, 1, D)

    # Copied from ldm_core.pipelines.text2img.Text2ImgPipeline.prepare_latents
    def prepare_latents(self, scheduler, n, height, width, generators, dtype):
        shape = latent_shape(self.vae, n, height, width)
        return per_image_noise(shape, generators, self.device, dtype) * scheduler.init_noise_sigma  # (B, C, h, w)

    @torch.inference_mode()
    def __call__(self, class_labels: int | list[int], height: int = 64, width: int = 64,
                 num_inference_steps: int = 50, guidance_scale: float = 1.0, seeds: list[int] | None = None,
                 sampler: str = DEFAULT_SAMPLER, eta: float = 0.0, callback: StepCallback | None = None,
                 output_type: str = "pil") -> PipelineOutput:
        # 1. inputs: one class and one seed per image (a single class is repeated)
        labels = [class_labels] if isinstance(class_labels, int) else list(class_labels)
        seeds = seeds_or_default(seeds, len(labels))
        if len(labels) == 1 and len(seeds) > 1:
            labels = labels * len(seeds)
        self.check_inputs(labels, height, width, num_inference_steps, guidance_scale, seeds, eta)
        scheduler = make_scheduler(self.published_scheduler_config, sampler)
        generators = make_generators(seeds)
        # 2. conditioning
        context = self.encode_classes(labels, guided(guidance_scale)).to(self.unet.dtype)   # (2B or B, 1, D)
        # 3. latents
        latents = self.prepare_latents(scheduler, len(seeds), height, width, generators, self.unet.dtype)
        # 4. denoising loop
        scheduler.set_timesteps(num_inference_steps, device=self.device)
        latents = denoise(lambda x, t: self.unet(x, t, encoder_hidden_states=context).sample, scheduler, latents,
                          scheduler.timesteps, guidance_scale, generators, callback, eta)
        # 5. decode
        name = type(scheduler).__name__
        if output_type == "latent":
            return PipelineOutput(latents, seeds, [], name)
        return PipelineOutput(to_pil(decode_latents(self.vae, latents.to(self.vae.dtype))), seeds, [], name)
