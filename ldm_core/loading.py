"""Reading a catalog model's parts from disk (or the hub cache): safetensors only, never remote
code, each component in the stack's dtype. The stack decides what to load and keeps it."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import diffusers
import torch
import transformers
from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertModel

from . import hub, zoo
from .catalog import Catalog, ModelEntry
from .pipelines.class_embedder import ClassEmbedder
from .pipelines.spatial_rescaler import SpatialRescaler
from .zoo.convert import LDMUNet2DModel
from .zoo.download import download

log = logging.getLogger("ldm_core.loading")


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says why and is safe to show."""


# components of this project's own that a model_index.json may name as ["ldm_core", class name]
OWN_COMPONENTS = {"ClassEmbedder": ClassEmbedder, "LDMUNet2DModel": LDMUNet2DModel, "SpatialRescaler": SpatialRescaler}


def component_class(library: str, class_name: str):
    """The class a model_index.json names, from diffusers, transformers or `OWN_COMPONENTS` only."""
    if class_name == "LDMBertModel":  # the paper's text encoder, shipped inside diffusers' LDM pipeline module
        return LDMBertModel
    if library == "ldm_core" and class_name in OWN_COMPONENTS:
        return OWN_COMPONENTS[class_name]
    if library == "diffusers":
        if hasattr(diffusers, class_name):
            return getattr(diffusers, class_name)
    if library == "transformers":
        if "Tokenizer" in class_name:
            return transformers.AutoTokenizer
        if hasattr(transformers, class_name):
            return getattr(transformers, class_name)
    raise ModelLoadError(f"component class {library}.{class_name} is not supported")


def model_folder(catalog: Catalog, entry: ModelEntry, fp16: bool, allow_downloads: bool
                 ) -> tuple[Path, dict[str, tuple[str | None, bool]]]:
    """The model's folder and, for hub models, each component's (weights variant, pickled?);
    a hub model's missing files are downloaded first when downloads are allowed, a zoo model is
    downloaded and converted once."""
    if entry.is_zoo:
        return zoo_folder(entry, allow_downloads), {}
    if not entry.is_hub:
        root = catalog.local_path(entry)
        if not (root / "model_index.json").is_file():
            raise ModelLoadError(f"model {entry.name!r}: its folder {root.name}/ has no model_index.json (not "
                                 f"trained or not installed); see docs/training.md")
        return root, {}
    local_only = not allow_downloads
    try:
        plan = hub.model_plan(entry.repo_id, entry.revision, fp16, local_only, entry.pickle_weights)
        todo = hub.missing(plan)
        if todo:
            log.info("%s: downloading %d files, %s, from %s@%s", entry.name, len(todo),
                     hub.gigabytes(sum(todo.values())), entry.repo_id, entry.revision[:12])
        return hub.fetch(plan, local_only), {c: (v, c in plan.pickles) for c, v in plan.variants.items()}
    except hub.HubError as e:
        raise ModelLoadError(f"model {entry.name!r} ({entry.repo_id}): {e}") from None
    except Exception as e:  # offline, missing repo, interrupted download
        raise ModelLoadError(f"model {entry.name!r} ({entry.repo_id}) could not be downloaded from the "
                             f"Hugging Face hub: {type(e).__name__}. It needs network access the first time "
                             f"(`python -m ldm_core download {entry.name}`); the built-in models work "
                             f"offline.") from None


def zoo_folder(entry: ModelEntry, allow_downloads: bool) -> Path:
    """A zoo model's converted folder, downloading and converting its original checkpoint first
    when it is not converted yet and downloads are allowed."""
    name = entry.zoo_name
    folder = zoo.converted(name)
    if folder is not None:
        return folder
    if name not in zoo.ZOO:
        raise ModelLoadError(f"model {entry.name!r}: no converted checkpoint named {name!r}; convert it with "
                             f"`python -m ldm_core convert model.ckpt --config config.yaml --name {name}`")
    if not allow_downloads:
        raise ModelLoadError(f"model {entry.name!r} is one of the paper's original checkpoints, not converted "
                             f"here yet: run `python -m ldm_core download {name}` with network access")
    try:
        return download(name, progress=log.info)
    except ModelLoadError:
        raise
    except Exception as e:  # offline, a refused checkpoint, a conversion that does not fit
        raise ModelLoadError(f"model {entry.name!r}: the original checkpoint could not be downloaded and "
                             f"converted: {type(e).__name__}: {str(e)[:300]}") from None


def load_component(cls, path: Path, subfolder: str | None, dtype: torch.dtype, variant: str | None = None,
                   pickled: bool = False):
    """One component (`cls.from_pretrained`), in `dtype`; its failure as a ModelLoadError that
    names the folder, not this machine's paths."""
    kwargs = {"variant": variant} if variant else {}
    if cls.__name__ != "AutoTokenizer" and hasattr(cls, "from_pretrained") and issubclass(cls, torch.nn.Module):
        kwargs["use_safetensors"] = not pickled   # pickled: torch.load(weights_only=True), see hub.py
        if "transformers" in cls.__module__:
            kwargs["trust_remote_code"] = False
            kwargs["dtype"] = dtype
        else:                                    # an fp16 variant is upcast where the device computes in fp32
            kwargs["torch_dtype"] = dtype
    try:
        if subfolder:
            return cls.from_pretrained(path, subfolder=subfolder, **kwargs)
        return cls.from_pretrained(path, **kwargs)
    except Exception as e:
        # the first line of the reason, with this machine's folders left out (users see it)
        why = (str(e).splitlines() or [""])[0][:300].replace(f"{path.parent}{os.sep}", "")
        if isinstance(e, OSError):
            raise ModelLoadError(f"{path.name}/{subfolder or ''}: {why} (only safetensors weights are "
                                 f"loaded)") from None
        raise ModelLoadError(f"{path.name}/{subfolder or ''} could not be loaded: {type(e).__name__}: "
                             f"{why}") from None
