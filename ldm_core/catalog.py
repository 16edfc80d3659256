"""The model catalog: `models/catalog.toml` lists every model a user can pick.

Each `[[model]]` has a name, a task, a source (a folder under `models/`, `hub:<repo id>`, or
`zoo:<name>`: one of the paper's original checkpoints, converted once, `ldm_core/zoo`), the
pipeline class that runs it, its native size and sampling defaults. Models the user converted
from their own checkpoints (`python -m ldm_core convert`) join the catalog as `zoo:` entries.
"""
from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import try_to_load_from_cache

from . import zoo
from .hub import availability as hub_availability
from .options import DDIM, DEFAULT_SAMPLER

COMMIT = re.compile(r"^[0-9a-f]{40}$")
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_CATALOG = MODELS_DIR / "catalog.toml"


# request field -> the ModelEntry attribute that is its default
REQUEST_DEFAULTS = {"steps": "steps", "guidance_scale": "guidance", "width": "width", "height": "height",
                    "sampler": "sampler", "average": "average", "model": "name", "eta": "eta"}
# a converted model's pipeline -> its task (models the user converted join the catalog)
ZOO_TASKS = {"UnconditionalPipeline": "unconditional", "ClassConditionalPipeline": "class2img",
             "SuperResPipeline": "superres", "PaperInpaintPipeline": "inpaint", "SemanticPipeline": "semantic2img",
             "PaperLayoutPipeline": "layout2img", "Text2ImgPipeline": "text2img"}


class CatalogError(ValueError):
    pass


@dataclass(frozen=True)
class ModelEntry:
    name: str
    task: str
    source: str                      # "shapes-text2img" (folder in models/) or "hub:CompVis/ldm-text2im-large-256"
    pipeline: str                    # the class that runs it, one of its task's (`Task.pipelines`)
    width: int = 64                  # native output size
    height: int = 64
    steps: int = 25
    guidance: float = 5.0
    sampler: str = DEFAULT_SAMPLER
    default: bool = False
    description: str = ""
    revision: str | None = None      # hub models: the commit (40 hex digits) the weights are pinned to
    average: int = 1                 # super-resolution: samples averaged per output (posterior-mean estimate)
    pickle_weights: bool = False     # hub: the pinned commit has no safetensors; read its pickles with
                                     # torch.load(weights_only=True) (ldm_core/hub.py)
    eta: float = 0.0                 # DDIM's eta (0: deterministic), as the paper's scripts sample the model
    guided: bool = True              # trained for classifier-free guidance (cin256 was not: guidance stays 1)
    classes: str = ""                # class2img: the class list its indices name ("imagenet", "shapes-world")
    refine_above: int = 0            # layout2img: a canvas larger than this is drawn at this size first, then
                                     # enlarged and refined at its own (a hires fix); 0: the UNet on the larger latent
    refine_strength: float = 0.0     # ... how far the enlarged first stage is noised and drawn again (0: not at all)
    speedups: str = ""               # those on by default ("deepcache,bf16"; ldm_core/speedups.py): where evals allow
    deepcache_interval: int = 3      # DeepCache: a full UNet step every N steps (1: never cached)
    deepcache_branch: int = 0        # ... the branch rerun between them (0: the shallowest)
    planner: str = ""                # text2img: a caption -> layout planner (a folder, as `source`; planner.py)
    layout_model: str = ""           # ... the layout2img model that draws its boxes (compositions/grounded.py)
    plan_layout: bool = False        # ... the stage on by default (a request's plan_layout "" follows this)

    def default_for(self, field: str):
        """This model's default for a request field it has one for (steps, guidance_scale, ...), else None."""
        return getattr(self, REQUEST_DEFAULTS[field]) if field in REQUEST_DEFAULTS else None

    @property
    def is_hub(self) -> bool:
        return self.source.startswith("hub:")

    @property
    def repo_id(self) -> str:
        return self.source[4:]

    @property
    def is_zoo(self) -> bool:
        return self.source.startswith("zoo:")

    @property
    def zoo_name(self) -> str:
        return self.source[4:]


@dataclass
class Catalog:
    entries: dict[str, ModelEntry]
    root: Path = MODELS_DIR          # folder that local sources are relative to
    path: Path | None = None

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> "Catalog":
        path = Path(path).resolve() if path else DEFAULT_CATALOG   # a relative path: from the current folder
        if not path.is_file():
            raise CatalogError(f"model catalog {path} not found")
        data = tomllib.loads(path.read_text())
        entries: dict[str, ModelEntry] = {}
        for raw in data.get("model", []):
            try:
                e = ModelEntry(**raw)
            except TypeError as err:
                raise CatalogError(f"{path}: bad entry {raw.get('name', raw)}: {err}") from None
            if e.average < 1:
                raise CatalogError(f"{path}: model {e.name!r} has average = {e.average}; it must be at least 1")
            if e.is_hub and not COMMIT.match(e.revision or ""):
                raise CatalogError(f"{path}: hub model {e.name!r} must pin `revision` to a 40-hex commit (a branch "
                                   f"or a refs/pr/N ref can move), got {e.revision!r}")
            if e.name in entries:
                raise CatalogError(f"{path}: model name {e.name!r} appears twice")
            entries[e.name] = e
        for e in user_converted_entries():
            entries.setdefault(e.name, e)
        root = Path(data.get("root", path.parent))
        return cls(entries, root if root.is_absolute() else (path.parent / root).resolve(), path)

    def check_tasks(self, tasks: Iterable[str]) -> "Catalog":
        """This catalog, once every entry's task is one of `tasks` (the stack passes the registry's)."""
        known = list(tasks)
        for e in self.entries.values():
            if e.task not in known:
                raise CatalogError(f"{self.path}: model {e.name!r} has unknown task {e.task!r}; tasks: "
                                   f"{', '.join(known)}")
        return self

    def for_task(self, task: str) -> list[ModelEntry]:
        return [e for e in self.entries.values() if e.task == task]

    def default(self, task: str) -> ModelEntry:
        models = self.for_task(task)
        if not models:
            raise CatalogError(f"the catalog has no model for {task}")
        return next((e for e in models if e.default), models[0])

    def get(self, name: str | None, task: str) -> ModelEntry:
        """The entry called `name` for `task` (the task's default when name is empty)."""
        if not name:
            return self.default(task)
        e = self.entries.get(name)
        if e is None or e.task != task:
            names = ", ".join(m.name for m in self.for_task(task))
            raise CatalogError(f"unknown model {name[:80]!r} for {task}; available: {names}")
        return e

    def local_path(self, entry: ModelEntry) -> Path:
        if entry.is_zoo:
            return zoo.zoo_dir() / entry.zoo_name
        return (self.root / entry.source).resolve()

    def availability(self, entry: ModelEntry, prefer_fp16: bool = False,
                     allow_downloads: bool = True) -> tuple[bool, str]:
        """(can run here, a short note for the UI): built-in; hub cached and ready; hub, will
        download N GB; or hub, cannot be downloaded here."""
        if entry.is_zoo:
            return zoo_availability(entry.zoo_name, allow_downloads)
        if not entry.is_hub:
            p = self.local_path(entry)
            if (p / "model_index.json").is_file():
                return True, "built-in"
            return False, "missing: not trained yet"
        a = hub_availability(entry.repo_id, entry.revision, prefer_fp16, allow_downloads, entry.pickle_weights)
        return a.can_run, a.note

    def published_scheduler(self, entry: ModelEntry) -> str | None:
        """The scheduler class the model was published with ("PNDMScheduler"), when its
        model_index.json is at hand (a built-in folder, or a hub model in the local cache)."""
        try:
            if entry.is_hub:
                path = try_to_load_from_cache(entry.repo_id, "model_index.json", revision=entry.revision)
                if not isinstance(path, str):
                    return None
            else:
                path = self.local_path(entry) / "model_index.json"
            spec = json.loads(Path(path).read_text()).get("scheduler")
            return spec[1] if isinstance(spec, list) and len(spec) == 2 else None
        except (OSError, ValueError):
            return None

    def choices(self, task: str, **kwargs) -> list[tuple[str, str]]:
        """(label, name) pairs for a dropdown: every model, with its availability said."""
        out = []
        for e in self.for_task(task):
            ok, note = self.availability(e, **kwargs)
            out.append((f"{e.name}  ({note})", e.name))
        return out


def zoo_availability(name: str, allow_downloads: bool) -> tuple[bool, str]:
    """A zoo model: converted here; or downloaded and converted on first use; or not at all offline."""
    if zoo.converted(name):
        return True, "original checkpoint, converted"
    z = zoo.ZOO.get(name)
    if z is None:
        return False, "missing: convert its checkpoint with `python -m ldm_core convert`"
    size = f"{z.size / 1e9:.1f} GB, " if z.size else ""
    if allow_downloads:
        return True, f"original checkpoint: downloads ({size}from ommer-lab.com) and converts on first use"
    return False, f"original checkpoint, not converted: `python -m ldm_core download {name}` with network"


def user_converted_entries() -> list[ModelEntry]:
    """Catalog entries for the checkpoints the user converted (`python -m ldm_core convert`): the
    native size from the converted UNet and autoencoder configs, DDIM, guidance where the class
    embedder has a null class."""
    out = []
    for name in zoo.user_converted():
        folder = zoo.zoo_dir() / name
        try:
            index = json.loads((folder / "model_index.json").read_text())
            unet = json.loads((folder / "unet" / "config.json").read_text())
            vae = json.loads((folder / "vae" / "config.json").read_text())
            embedder = folder / "class_embedder" / "config.json"
            classes = json.loads(embedder.read_text()) if embedder.is_file() else {}
            null = classes.get("null_class")
            info = zoo.source_info(name)
        except (OSError, ValueError):
            continue
        task = ZOO_TASKS.get(index.get("_class_name"))
        if task is None:
            continue
        side = int(unet.get("sample_size") or 64) * 2 ** (len(vae.get("block_out_channels", [0])) - 1)
        out.append(ModelEntry(name=name, task=task, source=f"zoo:{name}", pipeline=index["_class_name"],
                              width=side, height=side, steps=50, sampler=DDIM,
                              guidance=3.0 if null else 5.0 if task == "text2img" else 1.0,   # txt2img.py: scale 5
                              guided=null is not None or task == "text2img",
                              classes="imagenet" if len(classes.get("class_names") or ()) == 1000 else "",
                              description=f"Converted here from {info.get('file', 'a checkpoint')}."))
    return out
