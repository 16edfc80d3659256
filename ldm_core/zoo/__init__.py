"""The paper's released model zoo: what each original CompVis checkpoint is, where it is published,
and where its one-time conversion lives on this machine.

Facts (URLs, archive names, configs) are from CompVis/latent-diffusion at commit a506df5
(`scripts/download_models.sh`, `scripts/download_first_stages.sh`, README.md, and
`scripts/latent_imagenet_diffusion.ipynb` for cin256-v2); each config is vendored verbatim in
`configs/<name>.yaml` with its source path in its first line.

A zoo model is downloaded (`python -m ldm_core download <name>`) or given (`python -m ldm_core
convert model.ckpt --config config.yaml --name N`), read safely (`safe_load.py`), converted once
to diffusers-shaped components (`convert.py`) and saved as safetensors in `zoo_dir()/<name>/`,
beside `source.json` (the sha256 of the file it came from). Later loads read only the
safetensors. A catalog entry names a zoo model as `source = "zoo:<name>"`.

This module is a leaf: it knows names, URLs and folders, and imports nothing of the project.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent / "configs"
DEFAULT_URL_BASE = "https://ommer-lab.com/files/latent-diffusion/"
SOURCE_FILE = "source.json"        # beside a converted model: where it came from, and its sha256


def zoo_dir() -> Path:
    """Where converted zoo models live: $LDM_ZOO_DIR, else ~/.cache/ldm-studio/zoo."""
    return Path(os.environ.get("LDM_ZOO_DIR") or Path.home() / ".cache" / "ldm-studio" / "zoo")


def url_base() -> str:
    """Where the archives are fetched from: $LDM_ZOO_URL (a mirror, or a file:// folder offline)."""
    base = os.environ.get("LDM_ZOO_URL") or DEFAULT_URL_BASE
    return base if base.endswith("/") else base + "/"


@dataclass(frozen=True)
class ZooModel:
    name: str            # "celeba256": the repository's folder name under models/ldm or models/first_stage_models
    kind: str            # "ldm" (a diffusion model with its first stage) or "first_stage" (an autoencoder alone)
    file: str            # the published file, relative to the URL base: a .zip holding `member`, or a .ckpt
    task: str | None     # the studio task it runs ("unconditional", "class2img"); None for an autoencoder
    size: int | None = None   # published bytes, where a source states it
    member: str = "model.ckpt"   # the checkpoint inside the zip; "": the .zip is itself the checkpoint
    note: str = ""       # what the paper says it is

    @property
    def config(self) -> Path:
        return CONFIGS / f"{self.name}.yaml"

    @property
    def url(self) -> str:
        return url_base() + self.file

    @property
    def folder(self) -> Path:
        return zoo_dir() / self.name


ZOO: dict[str, ZooModel] = {m.name: m for m in (
    # ---- unconditional (§4.2, Table 1); README "Model Zoo" table: the DDIM steps and eta of each FID
    ZooModel("celeba256", "ldm", "celeba.zip", "unconditional",
             note="CelebA-HQ 256², LDM-VQ-4; FID 5.11 with 200 DDIM steps, eta 0"),
    ZooModel("ffhq256", "ldm", "ffhq.zip", "unconditional",
             note="FFHQ 256², LDM-VQ-4; FID 4.98 with 200 DDIM steps, eta 1"),
    ZooModel("lsun_churches256", "ldm", "lsun_churches.zip", "unconditional",
             note="LSUN-Churches 256², LDM-KL-8; FID 4.02 with 400 DDIM steps, eta 0"),
    ZooModel("lsun_beds256", "ldm", "lsun_bedrooms.zip", "unconditional",
             note="LSUN-Bedrooms 256², LDM-VQ-4; FID 2.95 with 200 DDIM steps, eta 1"),
    # ---- class-conditional ImageNet (§4.1, Table 3)
    ZooModel("cin256", "ldm", "cin.zip", "class2img",
             note="ImageNet 256², LDM-VQ-8, class through cross-attention; FID 7.77 guided, 200 DDIM steps, eta 1"),
    ZooModel("cin256-v2", "ldm", "nitro/cin/model.ckpt", "class2img", size=1_827_378_153,
             note="ImageNet 256², LDM-VQ-4 with a null class for classifier-free guidance (FID 3.6); the "
                  "notebook samples 20 DDIM steps, eta 0, scale 3"),
    # ---- conditional models (§4.3-4.5; scripts/download_models.sh, README "Text-to-Image", "Inpainting")
    ZooModel("txt2img-large", "ldm", "nitro/txt2img-f8-large/model.ckpt", "text2img",
             note="LAION-400M text-to-image, LDM-KL-8 + BERT (1.45B); the hub's ldm-text2im-large-256 is its "
                  "diffusers copy. Config: configs/latent-diffusion/txt2img-1p4B-eval.yaml"),
    ZooModel("text2img256", "ldm", "text2img.zip", "text2img",
             note="Conceptual Captions 256², LDM-VQ-4 + BERT (finetuned from LAION); FID 16.79, 100 DDIM steps, eta 0"),
    ZooModel("layout2img-openimages256", "ldm", "layout2img_model.zip", "layout2img",
             note="OpenImages layout-to-image 256², LDM-VQ-4; boxes and labels as tokens through a BERT encoder"),
    ZooModel("semantic_synthesis256", "ldm", "semantic_synthesis256.zip", "semantic2img",
             note="Landscapes from 182-class segmentation maps, 256², LDM-VQ-4, map concatenated (SpatialRescaler)"),
    ZooModel("semantic_synthesis512", "ldm", "semantic_synthesis.zip", "semantic2img",
             note="Landscapes from segmentation maps, 512² crops; sampled convolutionally beyond (§4.3.2, Fig. 9)"),
    ZooModel("bsr_sr", "ldm", "sr_bsr.zip", "superres",
             note="4x super-resolution, BSR degradation, LDM-VQ-4, low-res image concatenated; the hub's "
                  "ldm-super-resolution-4x-openimages is its diffusers copy"),
    ZooModel("inpainting_big", "ldm", "inpainting_big.zip", "inpaint",
             member="",    # not a zip of a .ckpt: the checkpoint itself (torch's zip format), as users found
                           # (CompVis/stable-diffusion#208: `wget -O .../last.ckpt .../inpainting_big.zip` works)
             note="Inpainting (§4.5, Table 7 'big'), LDM-VQ-4 no-attention first stage; masked image and mask "
                  "concatenated to the latent"),
    # ---- first stages (§3.1, README "Pretrained Autoencoding Models")
    ZooModel("kl-f4", "first_stage", "kl-f4.zip", None, note="KL, f=4, d=3; PSNR 27.53"),
    ZooModel("kl-f8", "first_stage", "kl-f8.zip", None, note="KL, f=8, d=4; PSNR 24.19"),
    ZooModel("kl-f16", "first_stage", "kl-f16.zip", None, note="KL, f=16, d=16; PSNR 24.08"),
    ZooModel("kl-f32", "first_stage", "kl-f32.zip", None, note="KL, f=32, d=64; PSNR 22.27"),
    ZooModel("vq-f4", "first_stage", "vq-f4.zip", None, note="VQ, f=4, Z=8192, d=3; PSNR 27.43"),
    ZooModel("vq-f4-noattn", "first_stage", "vq-f4-noattn.zip", None, note="VQ, f=4, no attention"),
    ZooModel("vq-f8", "first_stage", "vq-f8.zip", None, note="VQ, f=8, Z=16384, d=4; PSNR 23.07"),
    ZooModel("vq-f8-n256", "first_stage", "vq-f8-n256.zip", None, note="VQ, f=8, Z=256, d=4; PSNR 22.35"),
    ZooModel("vq-f16", "first_stage", "vq-f16.zip", None, note="VQ, f=16, Z=16384, d=8"),
)}


def converted(name: str) -> Path | None:
    """The converted model's folder for a zoo name, or a name given to `convert`; None if not there."""
    folder = zoo_dir() / name
    if (folder / "model_index.json").is_file() and (folder / SOURCE_FILE).is_file():
        return folder
    return None


def source_info(name: str) -> dict:
    """What `source.json` says of a converted model ({} when there is none)."""
    folder = converted(name)
    return json.loads((folder / SOURCE_FILE).read_text()) if folder else {}


def user_converted() -> list[str]:
    """Names of models the user converted from their own checkpoints (not in ZOO)."""
    root = zoo_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.name not in ZOO and converted(p.name))


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet labels in class-index order ("tench, Tinca tinca", ...)."""
    out = []
    for line in (Path(__file__).resolve().parent / "imagenet_classes.txt").read_text().splitlines():
        if line.startswith("#") or ":" not in line:
            continue
        index, label = line.split(":", 1)
        if int(index.strip(" {")) != len(out):
            raise ValueError(f"imagenet_classes.txt: index {index.strip()} out of order")
        out.append(label.strip().rstrip(",").strip("'\""))
    if len(out) != 1000:
        raise ValueError(f"imagenet_classes.txt has {len(out)} labels, not 1000")
    return tuple(out)
