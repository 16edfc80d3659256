"""Layout -> image with the paper's own model (§4.3, `layout2img-openimages256`), diffusers-shaped.

The original: `cond_stage_key: coordinates_bbox`, a BERTEmbedder (x-transformers encoder, 16 layers,
width 512, vocab 8192, 92 positions, no tokenizer) trained with the diffusion model, its output read by
the UNet's cross-attention (SpatialTransformer, context_dim 512); a VQ-f4 first stage. Converted: the
encoder as diffusers' `LDMBertModel`, the UNet as `UNet2DConditionModel`, the first stage as `VQModel`,
DDIM on the training schedule.

A call: check_inputs -> the boxes as the 92 tokens the model was trained on (`layout_tokens.py`: class,
top-left and bottom-right corner on a 90x90 grid per box, pad triples, the crop's two corners) -> the
encoder's embeddings (B, 92, 512) -> noise -> the shared numbered loop (`common.denoise`) -> VQ decode.

What it does not do, and why:

- No caption: the model reads boxes and classes only.
- No classifier-free guidance: the model was trained on every layout with no null or dropped
  conditioning (cond_stage_trainable, no unconditional branch in the original), so there is no
  unconditional prediction to guide from; guidance must be 1 (a negative prompt has nothing to act on).
- Sizes: 256² natively. The UNet is convolutional and the tokens are coordinates normalised to the
  picture, so other sizes run as the paper samples beyond the training size (§4.3.2): a box keeps its
  place relative to the picture. A side must be a multiple of the autoencoder's downsampling times the
  UNet's (4 x 8 = 32 for the paper's model); other sizes are refused, as the original UNet's skip
  connections would not line up.
"""
from __future__ import annotations

import torch
from diffusers import DiffusionPipeline

from .common import (
    DEFAULT_SAMPLER,
    PipelineOutput,
    StepCallback,
    check_steps,
    denoise,
    make_generators,
    make_scheduler,
    per_image_noise,
    seeds_or_default,
)
from .latents import decode_latents, latent_channels, latent_shape, to_pil, vae_scale_factor
from .layout_tokens import MAX_OBJECTS, SEQ_LEN, UnknownLabel, layout_tokens, openimages_classes
from .unconditional import unet_multiple

Boxes = list[tuple[str, tuple[float, float, float, float]]]
NO_GUIDANCE = ("the paper's layout model was trained without a null layout, so classifier-free guidance cannot run: "
               "set guidance to 1")


class PaperLayoutPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->unet->vae"
    guided = False            # no unconditional branch (see the module's docstring)
    takes_caption = False

    def __init__(self, vae, text_encoder, unet, scheduler):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, unet=unet, scheduler=scheduler)
        self.published_scheduler_config = dict(scheduler.config)   # each call samples with a fresh scheduler

    @staticmethod
    def class_names() -> tuple[str, ...]:
        """The OpenImages class names the model knows, by category number."""
        return openimages_classes().names

    @staticmethod
    def class_of(label: str) -> str:
        """The class a label names (case-insensitive; a class the training data merged into another, e.g.
        'Man' -> 'Person', gives that one); a ValueError that suggests close names when it names none."""
        classes = openimages_classes()
        return classes.names[classes.number(label)]

    @property
    def size_multiple(self) -> int:
        """The sides' multiple: the autoencoder's downsampling times the UNet's."""
        return vae_scale_factor(self.vae) * unet_multiple(self.unet)

    def check_inputs(self, prompt, boxes, negative_prompt, height, width, steps, guidance_scale, seeds):
        if prompt or negative_prompt:
            raise ValueError("the paper's layout model reads boxes and classes only, no caption or negative "
                             "prompt: leave them empty")
        if guidance_scale != 1.0:
            raise ValueError(NO_GUIDANCE)
        if not boxes:
            raise ValueError("give at least one box: the paper's layout model draws from boxes alone")
        if len(boxes) > MAX_OBJECTS:
            raise ValueError(f"at most {MAX_OBJECTS} boxes (the model reads {SEQ_LEN} tokens), got {len(boxes)}")
        m = self.size_multiple
        if height % m or width % m:
            raise ValueError(f"height and width must be multiples of {m} for this model (its autoencoder "
                             f"downsamples {vae_scale_factor(self.vae)}x, its UNet {unet_multiple(self.unet)}x "
                             f"more), got {width}x{height}")
        if not seeds:
            raise ValueError("no images asked for")
        check_steps(steps)
        c = latent_channels(self.vae)
        if self.unet.config.in_channels != c:
            raise ValueError(f"this UNet takes {self.unet.config.in_channels} input channels; the autoencoder's "
                             f"latents have {c}")
        positions = self.text_encoder.config.max_position_embeddings
        if positions < SEQ_LEN:
            raise ValueError(f"this layout encoder reads {positions} tokens; the layout takes {SEQ_LEN}")

    def tokens(self, boxes: Boxes) -> torch.Tensor:
        """The boxes as the model's 92 token ids (1, 92); a label it does not know is a ValueError."""
        classes = openimages_classes()
        try:
            objects = [(classes.number(label), box) for label, box in boxes]
        except UnknownLabel as e:
            raise ValueError(str(e)) from None
        ids = layout_tokens(objects, len(classes.names))
        return torch.tensor([ids], dtype=torch.long, device=self.device)

    def encode_layout(self, boxes: Boxes, n: int) -> torch.Tensor:
        """The layout encoder's output for the boxes, once per image (B, 92, D)."""
        hidden = self.text_encoder(self.tokens(boxes))[0]      # (1, 92, D)
        return hidden.expand(n, -1, -1)

    # Copied from ldm_core.pipelines.text2img.Text2ImgPipeline.prepare_latents
    def prepare_latents(self, scheduler, n, height, width, generators, dtype):
        shape = latent_shape(self.vae, n, height, width)
        return per_image_noise(shape, generators, self.device, dtype) * scheduler.init_noise_sigma  # (B, C, h, w)

    @torch.inference_mode()
    def __call__(self, boxes: Boxes, prompt: str = "", negative_prompt: str = "", height: int = 256, width: int = 256,
                 num_inference_steps: int = 100, guidance_scale: float = 1.0, seeds: list[int] | None = None,
                 sampler: str = DEFAULT_SAMPLER, eta: float = 0.0, callback: StepCallback | None = None,
                 output_type: str = "pil") -> PipelineOutput:
        # 1. inputs
        boxes = list(boxes)
        seeds = seeds_or_default(seeds)
        self.check_inputs(prompt, boxes, negative_prompt, height, width, num_inference_steps, guidance_scale, seeds)
        scheduler = make_scheduler(self.published_scheduler_config, sampler)
        generators = make_generators(seeds)
        # 2. conditioning: the layout's tokens through the encoder (B, 92, D)
        context = self.encode_layout(boxes, len(seeds)).to(self.unet.dtype)
        # 3. latents
        latents = self.prepare_latents(scheduler, len(seeds), height, width, generators, self.unet.dtype)
        # 4. denoising loop (guidance 1: the conditional prediction alone)
        scheduler.set_timesteps(num_inference_steps, device=self.device)
        latents = denoise(lambda x, t: self.unet(x, t, encoder_hidden_states=context).sample, scheduler, latents,
                          scheduler.timesteps, 1.0, generators, callback, eta)
        # 5. decode
        name = type(scheduler).__name__
        if output_type == "latent":
            return PipelineOutput(latents, seeds, [], name)
        return PipelineOutput(to_pil(decode_latents(self.vae, latents.to(self.vae.dtype))), seeds, [], name)
