"""The four hub repositories the catalog pins, as data: each `RepoSpec` holds a repository's
complete file listing with the published sizes, and every configuration as published (what is
read verbatim and what is rebuilt is said beside each), plus `SHRINK`, what scale="tiny" shrinks.
Written out by `ldm_core.hub_mirror.write_mirror`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

GB = 10 ** 9
MB = 10 ** 6
KB = 10 ** 3


@dataclass(frozen=True)
class RepoSpec:
    repo_id: str
    commit: str
    about: str                       # what the commit is
    files: dict[str, int]            # the whole listing: path -> published size in bytes
    configs: dict[str, dict]         # path -> the published JSON
    pickle_weights: bool = False     # the catalog reads this repository's pickles (no safetensors at the pin)
    notes: dict[str, str] = field(default_factory=dict)


# ------------------------------------------------------------------ shared published configs
_CLIP_TEXT = {  # CLIP ViT-L/14 text tower as Stable Diffusion 1.x ships it (rebuilt: 592 B, SD-1.4 form)
    "_name_or_path": "openai/clip-vit-large-patch14", "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2, "hidden_act": "quick_gelu",
    "hidden_size": 768, "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": 3072,
    "layer_norm_eps": 1e-05, "max_position_embeddings": 77, "model_type": "clip_text_model",
    "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 1, "torch_dtype": "float32",
    "transformers_version": "4.21.0.dev0", "vocab_size": 49408}
_ADDED = {"lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
_CLIP_TOKENIZER = {  # tokenizer_config.json, 806 B / 34 lines (rebuilt)
    "add_prefix_space": False,
    "bos_token": {"__type": "AddedToken", "content": "<|startoftext|>", **_ADDED},
    "do_lower_case": True,
    "eos_token": {"__type": "AddedToken", "content": "<|endoftext|>", **_ADDED},
    "errors": "replace", "model_max_length": 77, "name_or_path": "openai/clip-vit-large-patch14",
    "pad_token": "<|endoftext|>", "special_tokens_map_file": "./special_tokens_map.json",
    "tokenizer_class": "CLIPTokenizer",
    "unk_token": {"__type": "AddedToken", "content": "<|endoftext|>", **_ADDED}}
_CLIP_SPECIAL = {  # special_tokens_map.json, 472 B / 24 lines (rebuilt)
    "bos_token": {"content": "<|startoftext|>", **_ADDED}, "eos_token": {"content": "<|endoftext|>", **_ADDED},
    "pad_token": "<|endoftext|>", "unk_token": {"content": "<|endoftext|>", **_ADDED}}
_SD_VAE = {  # Stable Diffusion 1.x KL f=8 autoencoder (rebuilt: 552 B / 29 lines)
    "_class_name": "AutoencoderKL", "_diffusers_version": "0.6.0.dev0", "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3,
    "sample_size": 256, "up_block_types": ["UpDecoderBlock2D"] * 4}
_SD_UNET = {  # Stable Diffusion 1.x UNet (860M): 64x64x4 latents, CLIP context 768
    "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.6.0.dev0", "act_fn": "silu",
    "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False,
    "cross_attention_dim": 768, "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3}
_CLIP_PREPROCESSOR = {  # 342 B / 20 lines (rebuilt)
    "crop_size": 224, "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True, "do_resize": True,
    "feature_extractor_type": "CLIPFeatureExtractor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3, "size": 224}
_SAFETY = {"architectures": ["StableDiffusionSafetyChecker"], "model_type": "clip", "projection_dim": 768}


def _sd_listing(weights: dict[str, list[str]], sizes: dict[str, int]) -> dict[str, int]:
    return {f"{c}/{n}": sizes[f"{c}/{n}"] for c, names in weights.items() for n in names}


# ------------------------------------------------------------------ the four repositories
LDM_TEXT2IM = RepoSpec(
    repo_id="CompVis/ldm-text2im-large-256",
    commit="30de525ca11a880baea4962827fb6cb0bb268955",
    about="main: 'fix broken arxiv url (#8)', Jan 4 2023 (15 commits). Weights are pickles only; the "
          "safetensors conversion exists only on the PR ref refs/pr/10 (commit 34f05e6..., whose full hash "
          "was not available offline), so the catalog reads these pickles with torch.load(weights_only=True).",
    pickle_weights=True,
    files={
        ".gitattributes": 1170, "README.md": 2950, "model_index.json": 376,
        "bert/config.json": 662, "bert/pytorch_model.bin": int(2.33 * GB),
        "unet/config.json": 713, "unet/diffusion_pytorch_model.bin": int(3.49 * GB),
        "vqvae/config.json": 551, "vqvae/diffusion_pytorch_model.bin": 335 * MB,
        "tokenizer/special_tokens_map.json": 125, "tokenizer/tokenizer_config.json": 420,
        "tokenizer/vocab.txt": 232 * KB,
        "scheduler/scheduler_config.json": 252,
    },
    configs={
        "model_index.json": {  # read (blob/main/model_index.json, 376 B)
            "_class_name": "LDMTextToImagePipeline", "_diffusers_version": "0.0.4",
            "bert": ["latent_diffusion", "LDMBertModel"], "scheduler": ["diffusers", "DDIMScheduler"],
            "tokenizer": ["transformers", "BertTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
            "vqvae": ["diffusers", "AutoencoderKL"]},
        "bert/config.json": {  # read (blame/main/bert/config.json, 662 B)
            "_name_or_path": "fusing/latent-diffusion-text2im-large", "activation_dropout": 0.0,
            "activation_function": "gelu", "architectures": ["LDMBertModel"], "attention_dropout": 0.0,
            "classifier_dropout": 0.0, "d_model": 1280, "dropout": 0.1, "encoder_attention_heads": 8,
            "encoder_ffn_dim": 5120, "encoder_layerdrop": 0.0, "encoder_layers": 32, "head_dim": 64,
            "init_std": 0.02, "max_position_embeddings": 77, "model_type": "ldmbert", "num_hidden_layers": 32,
            "pad_token_id": 0, "scale_embedding": False, "torch_dtype": "float32",
            "transformers_version": "4.21.0.dev0", "use_cache": True, "vocab_size": 30522},
        "tokenizer/tokenizer_config.json": {  # read (44daea0, 420 B): model_max_length 512, LDMBert reads 77
            "cls_token": "[CLS]", "do_basic_tokenize": True, "do_lower_case": True, "mask_token": "[MASK]",
            "model_max_length": 512, "name_or_path": "fusing/latent-diffusion-text2im-large", "never_split": None,
            "pad_token": "[PAD]", "sep_token": "[SEP]", "special_tokens_map_file": None, "strip_accents": None,
            "tokenize_chinese_chars": True, "tokenizer_class": "BertTokenizer", "unk_token": "[UNK]"},
        "tokenizer/special_tokens_map.json": {  # rebuilt (125 B)
            "cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]", "sep_token": "[SEP]",
            "unk_token": "[UNK]"},
        "unet/config.json": {  # rebuilt from the paper's txt2img-1p4B config (model_channels 320, mult 1-2-4-4,
            # 2 res blocks, attention at 4/2/1, 8 heads, context 1280, 32x32 latents)
            "_class_name": "UNet2DConditionModel", "_diffusers_version": "0.0.4", "act_fn": "silu",
            "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False,
            "cross_attention_dim": 1280, "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
            "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4,
            "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
            "out_channels": 4, "sample_size": 32, "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3},
        "vqvae/config.json": {  # rebuilt from a diffusers re-save of this snapshot (scaling 0.18215)
            "_class_name": "AutoencoderKL", "_diffusers_version": "0.0.4", "act_fn": "silu",
            "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
            "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
            "out_channels": 3, "sample_size": 256, "scaling_factor": 0.18215,
            "up_block_types": ["UpDecoderBlock2D"] * 4},
        "scheduler/scheduler_config.json": {  # rebuilt: the paper's linear_start/end 0.00085/0.012
            "_class_name": "DDIMScheduler", "_diffusers_version": "0.0.4", "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
            "num_train_timesteps": 1000, "set_alpha_to_one": False, "steps_offset": 1, "trained_betas": None},
    })

LDM_SUPERRES = RepoSpec(
    repo_id="CompVis/ldm-super-resolution-4x-openimages",
    commit="0b55ddf931a8e3a1b426b3a50ddcf325ff84f668",
    about="main: 'Fix deprecated float16/fp16 variant loading through new `version` API. (#4)' (7 commits): "
          "fp16 safetensors variants beside fp32 and fp16 pickles; no full-precision safetensors.",
    files={
        ".gitattributes": 1480, "README.md": 2830, "model_index.json": 248,
        "scheduler/scheduler_config.json": 286,
        "unet/config.json": 873, "unet/diffusion_pytorch_model.bin": 455 * MB,
        "unet/diffusion_pytorch_model.fp16.bin": 227_370_409,        # PR #4's file list (exact sizes)
        "unet/diffusion_pytorch_model.fp16.safetensors": 227_280_286,
        "vqvae/config.json": 713, "vqvae/diffusion_pytorch_model.bin": 221 * MB,
        "vqvae/diffusion_pytorch_model.fp16.bin": 110_726_178,
        "vqvae/diffusion_pytorch_model.fp16.safetensors": 110_668_188,
    },
    configs={
        "model_index.json": {  # rebuilt (248 B)
            "_class_name": "LDMSuperResolutionPipeline", "_diffusers_version": "0.8.0.dev0",
            "scheduler": ["diffusers", "DDIMScheduler"], "unet": ["diffusers", "UNet2DModel"],
            "vqvae": ["diffusers", "VQModel"]},
        "unet/config.json": {  # read (blame/45d5e42/unet/config.json, 873 B)
            "_class_name": "UNet2DModel", "_diffusers_version": "0.8.0.dev0", "act_fn": "silu",
            "attention_head_dim": 32, "block_out_channels": [160, 320, 320, 640], "center_input_sample": False,
            "down_block_types": ["DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
            "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 6,
            "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
            "out_channels": 3, "sample_size": 64, "time_embedding_type": "positional",
            "up_block_types": ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D"]},
        "vqvae/config.json": {  # read (blob/refs/pr/1/vqvae/config.json, 713 B, unchanged on main)
            "_class_name": "VQModel", "_diffusers_version": "0.8.0.dev0", "act_fn": "silu",
            "block_out_channels": [128, 256, 512], "down_block_types": ["DownEncoderBlock2D"] * 3,
            "in_channels": 3, "latent_channels": 3, "layers_per_block": 2, "norm_num_groups": 32,
            "num_vq_embeddings": 8192, "out_channels": 3, "sample_size": 256,
            "up_block_types": ["UpDecoderBlock2D"] * 3, "vq_embed_dim": None},
        "scheduler/scheduler_config.json": {  # rebuilt (286 B, the source repository's file)
            "_class_name": "DDIMScheduler", "_diffusers_version": "0.7.0.dev0", "beta_end": 0.0155,
            "beta_schedule": "scaled_linear", "beta_start": 0.0015, "clip_sample": False,
            "num_train_timesteps": 1000, "set_alpha_to_one": True, "steps_offset": 1, "trained_betas": None},
    })

_GLIGEN_SIZES = {
    "unet/diffusion_pytorch_model.bin": int(4.27 * GB), "unet/diffusion_pytorch_model.fp16.bin": int(2.14 * GB),
    "text_encoder/pytorch_model.bin": 492_305_335, "text_encoder/pytorch_model.fp16.bin": 246 * MB,
    "vae/diffusion_pytorch_model.bin": 335 * MB, "vae/diffusion_pytorch_model.fp16.bin": 167 * MB,
    "safety_checker/pytorch_model.bin": 1_216_061_799, "safety_checker/pytorch_model.fp16.bin": 608 * MB}
GLIGEN = RepoSpec(
    repo_id="masterful/gligen-1-4-generation-text-box",
    commit="d2820dc1e9ba6ca082051ce79cfd3eb468ae2c83",
    about="main: 'Update README.md' (13 commits). Pickles only (fp32 and fp16); its safetensors were deleted "
          "(bd218c1, a plain SD UNet) and reconverted only on the PR ref refs/pr/2 (commit 29be6c8..., full hash "
          "not available offline), so the catalog reads these pickles with torch.load(weights_only=True).",
    pickle_weights=True,
    files={
        ".gitattributes": 1520, "README.md": 10_700, "model_index.json": 543, "v1-variants-scores.jpg": 71_200,
        "unet/config.json": 772, "text_encoder/config.json": 592, "vae/config.json": 551,
        "safety_checker/config.json": 4560, "scheduler/scheduler_config.json": 313,
        "feature_extractor/preprocessor_config.json": 342,
        "tokenizer/merges.txt": 525 * KB, "tokenizer/special_tokens_map.json": 472,
        "tokenizer/tokenizer_config.json": 806, "tokenizer/vocab.json": 1060 * KB,
        **_GLIGEN_SIZES,
    },
    configs={
        "model_index.json": {  # read (blob/d66573d/model_index.json, 543 B, unchanged on main)
            "_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.2.2",
            "feature_extractor": ["transformers", "CLIPFeatureExtractor"],
            "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
            "scheduler": ["diffusers", "PNDMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"]},
        # read: blame/d66573d/unet/config.json with 101a3d0's one-line change (772 B)
        "unet/config.json": {**_SD_UNET, "_diffusers_version": "0.2.2", "attention_type": "gated"},
        "text_encoder/config.json": _CLIP_TEXT,                            # rebuilt (592 B)
        "vae/config.json": {**_SD_VAE, "_diffusers_version": "0.2.2"},     # rebuilt (551 B)
        "scheduler/scheduler_config.json": {  # rebuilt: model_index names PNDMScheduler; SD-1.4's schedule
            "_class_name": "PNDMScheduler", "_diffusers_version": "0.2.2", "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
            "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None},
        "tokenizer/tokenizer_config.json": _CLIP_TOKENIZER, "tokenizer/special_tokens_map.json": _CLIP_SPECIAL,
        "feature_extractor/preprocessor_config.json": _CLIP_PREPROCESSOR,
        "safety_checker/config.json": _SAFETY,
    })

SD_INPAINT = RepoSpec(
    repo_id="stable-diffusion-v1-5/stable-diffusion-inpainting",
    commit="8a4288a76071f7280aedbdb3253bdb9e9d5d84bb",
    about="main: 'Initial commit' by sd-legacy, Sep 6 2024 (the only commit, a re-upload of "
          "runwayml/stable-diffusion-inpainting): fp16 safetensors variants beside fp32 and fp16 pickles.",
    files={
        ".gitattributes": 1750, "README.md": 15_100, "config.json": 748, "model_index.json": 548,
        "sd-v1-5-inpainting.ckpt": 4_265_437_280,
        "unet/config.json": 748, "unet/diffusion_pytorch_model.bin": int(3.44 * GB),
        "unet/diffusion_pytorch_model.fp16.bin": int(1.72 * GB),
        "unet/diffusion_pytorch_model.fp16.safetensors": int(1.72 * GB),
        "text_encoder/config.json": 617, "text_encoder/model.fp16.safetensors": 246_144_864,
        "text_encoder/pytorch_model.bin": 492_305_335, "text_encoder/pytorch_model.fp16.bin": 246 * MB,
        "vae/config.json": 552, "vae/diffusion_pytorch_model.bin": 335 * MB,
        "vae/diffusion_pytorch_model.fp16.bin": 167 * MB, "vae/diffusion_pytorch_model.fp16.safetensors": 167_335_342,
        "safety_checker/config.json": 4780, "safety_checker/model.fp16.safetensors": 608_018_440,
        "safety_checker/pytorch_model.bin": 1_216_061_799, "safety_checker/pytorch_model.fp16.bin": 608 * MB,
        "tokenizer/merges.txt": 525 * KB, "tokenizer/special_tokens_map.json": 472,
        "tokenizer/tokenizer_config.json": 806, "tokenizer/vocab.json": 1060 * KB,
        "scheduler/scheduler_config.json": 313, "feature_extractor/preprocessor_config.json": 342,
    },
    configs={
        "model_index.json": {  # read (blob/refs/pr/1/model_index.json, 548 B = main's size)
            "_class_name": "StableDiffusionInpaintPipeline", "_diffusers_version": "0.6.0",
            "feature_extractor": ["transformers", "CLIPImageProcessor"],
            "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
            "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"]},
        "unet/config.json": {**_SD_UNET, "in_channels": 9},                 # rebuilt (748 B / 36 lines)
        "config.json": {**_SD_UNET, "in_channels": 9},                      # the root copy of the UNet config
        "text_encoder/config.json": {**_CLIP_TEXT, "projection_dim": 768,   # rebuilt (617 B / 25 lines)
                                     "transformers_version": "4.22.0.dev0"},
        "vae/config.json": _SD_VAE,                                         # rebuilt (552 B / 29 lines)
        "scheduler/scheduler_config.json": {  # rebuilt (313 B / 13 lines)
            "_class_name": "DDIMScheduler", "_diffusers_version": "0.6.0.dev0", "beta_end": 0.012,
            "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
            "num_train_timesteps": 1000, "set_alpha_to_one": False, "steps_offset": 1, "trained_betas": None,
            "skip_prk_steps": True},
        "tokenizer/tokenizer_config.json": _CLIP_TOKENIZER, "tokenizer/special_tokens_map.json": _CLIP_SPECIAL,
        "feature_extractor/preprocessor_config.json": _CLIP_PREPROCESSOR,
        "safety_checker/config.json": _SAFETY,
    })

REPOS = {r.repo_id: r for r in (LDM_TEXT2IM, LDM_SUPERRES, GLIGEN, SD_INPAINT)}

# ------------------------------------------------------------------ unconditional (paper §4.2); sources: `notes`
LDM_CELEBAHQ = RepoSpec(
    repo_id="CompVis/ldm-celebahq-256", commit="03978f22272a3c2502da709c3940e227c9714bdd",
    about="main: 'upload new weights' by patrickvonplaten, Jul 28 2022 (29 commits). Pickles only (fp32): safetensors "
          "only on the PR ref refs/pr/7 (dec51d6..., full hash not available offline). No scaling_factor in vqvae's "
          "config: LDMPipeline divides latents by 0.18215 (diffusers #6725); the fix is the unmerged refs/pr/5.",
    pickle_weights=True,
    files={".gitattributes": 1170, "README.md": 4330, "model_index.json": 228, "run.py": 2240, "unet/config.json": 712,
           **{f"images/generated_image_{i}.png": n for i, n in enumerate((119_000, 117_000, 91_500, 111_000))},
           "scheduler/scheduler_config.json": 249, "unet/diffusion_pytorch_model.bin": 1_096_377_377,
           "vqvae/config.json": 486, "vqvae/diffusion_pytorch_model.bin": 221_373_271},
    configs={  # the unet's is the paper's celeba256 UNet: tests/test_zoo_celebahq.py checks every key
        "model_index.json": {"_class_name": "LDMPipeline", "_diffusers_version": "0.1.1", "scheduler": [
            "diffusers", "DDIMScheduler"], "unet": ["diffusers", "UNet2DModel"], "vqvae": ["diffusers", "VQModel"]},
        "unet/config.json": {"_class_name": "UNet2DModel", "_diffusers_version": "0.0.4", "act_fn": "silu",
            "attention_head_dim": 32, "block_out_channels": [224, 448, 672, 896], "center_input_sample": False,
            "down_block_types": ["DownBlock2D"] + ["AttnDownBlock2D"] * 3, "downsample_padding": 1,
            "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 3, "layers_per_block": 2,
            "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 3, "sample_size": 64,
            "time_embedding_type": "positional", "up_block_types": ["AttnUpBlock2D"] * 3 + ["UpBlock2D"]},
        "vqvae/config.json": {"_class_name": "VQModel", "_diffusers_version": "0.1.2", "act_fn": "silu",
                              "block_out_channels": [128, 256, 512], "down_block_types": ["DownEncoderBlock2D"] * 3,
                              "in_channels": 3, "latent_channels": 3, "layers_per_block": 2, "num_vq_embeddings": 8192,
                              "out_channels": 3, "sample_size": 256, "up_block_types": ["UpDecoderBlock2D"] * 3},
        "scheduler/scheduler_config.json": {"_class_name": "DDIMScheduler", "_diffusers_version": "0.0.4",
            "beta_end": 0.0195, "beta_schedule": "scaled_linear", "beta_start": 0.0015, "clip_sample": False,
            "timestep_values": None, "timesteps": 1000, "trained_betas": None}},   # (pre-release keys: ignored)
    notes={"commit": "huggingface.co/CompVis/ldm-celebahq-256/: tree/03978f2... (29 commits; refs/pr/4, /5, /7: 30 "
                     "each, main + 1), commits/main/vqvae (stored pages; rebuilt: not read verbatim)",
        "sizes": "tree pages at 03978f2, kB-rounded; unet .bin: LFS pointer in commit/321d836... (exact); vqvae .bin: "
                 "rebuilt (221 MB; bytes of a diffusers 0.16 re-save, newsyctw/res_LDM-CELEBA-HQ-256_... @2cab7e3)",
        "configs": "blob/main/vqvae/config.json; the others: verbatim copies in github.com/SumantBagri/CSC2231_Project"
                   "@5af3d89 ldm_uncond/ldm-celebahq-256/ (228, 712, 249 B: the listed sizes)"})
REPOS[LDM_CELEBAHQ.repo_id] = LDM_CELEBAHQ

# scale="tiny": what is shrunk, per model class (everything else stays as published)
SHRINK = {
    "UNet2DConditionModel": {"block_out_channels": [32, 64, 64, 64]},
    "UNet2DModel": {"block_out_channels": [32, 32, 32, 64]},
    "AutoencoderKL": {"block_out_channels": [16, 16, 32, 32], "norm_num_groups": 16},
    "VQModel": {"block_out_channels": [16, 32, 32], "norm_num_groups": 16},
    "LDMBertModel": {"encoder_layers": 2, "num_hidden_layers": 2, "encoder_ffn_dim": 256},
    "CLIPTextModel": {"num_hidden_layers": 2, "intermediate_size": 256},
}
