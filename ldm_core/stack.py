"""The resident model stack: the one owner of loaded models.

- loads a catalog entry once per process (safetensors only, never remote code) and keeps
  it on the device; components two models share (the built-in autoencoder, a text
  encoder) are loaded once and held once;
- device CUDA > MPS > CPU, fp16 on CUDA; attention slicing "auto" (on only where it
  lowers peak memory: MPS; PyTorch's fused SDPA already computes attention in
  memory-efficient chunks on CUDA and CPU), "on" or "off";
- autoencoders decode the whole batch at once while it fits in half the free memory, else
  one image at a time (VAE slicing), else in tiles; on CPU small convolutions run on
  PyTorch's native kernel (see bench/run.py and docs/benchmarks.md for what each
  buys); `compile=True` (or LDM_TORCH_COMPILE=1) compiles each UNet with torch.compile, opt-in;
- a memory budget: loading past it evicts the least-recently used pipelines first;
- one lock per device serialises generation;
- `run(request)` validates, generates and stamps provenance on every image;
- out of memory during a generation frees what it can (the failed run's tensors, the other
  resident models, the CUDA cache) and raises `OutOfMemory` with a message for the user; the
  stack goes on serving (the tests inject the fault on CPU from outside: tests/faults/).
"""
from __future__ import annotations

import gc
import json
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from . import hub
from .catalog import Catalog, ModelEntry
from .limits import DEFAULT_LIMITS, Limits
from .pipelines import COMPONENT_ALIASES, PIPELINES
from .pipelines.common import GenerationCancelled, StepCallback, native_small_convs, resolve_seeds
from .requests import (InpaintRequest, Layout2ImgRequest, Request, RequestError, SuperResRequest, Text2ImgRequest,
                       validate)

log = logging.getLogger("ldm_core.stack")


# live previews are decoded only while a decode costs at most this share of the time between previews
PREVIEW_BUDGET = 0.02


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says why and is safe to show."""


class OutOfMemory(RuntimeError):
    """A generation ran out of memory; what could be freed was. The message is safe to show."""


class TimeLimit(RuntimeError):
    """A generation ran past the limits' max_seconds and was stopped. The message is safe to show."""


def _with_deadline(callback: StepCallback | None, seconds: float | None) -> StepCallback | None:
    """`callback`, and a stop (TimeLimit) at the first step that ends after `seconds` from now."""
    if not seconds:
        return callback
    deadline = time.perf_counter() + seconds

    def timed(step):
        if time.perf_counter() > deadline:
            raise TimeLimit(f"stopped after step {step.step} of {step.total}: this server allows {seconds:g} s "
                            f"per generation; use fewer steps or images, or a smaller size")
        return callback(step) if callback is not None else None
    return timed


def pick_device(requested: str | None = None) -> torch.device:
    if requested and requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.float32


def module_bytes(obj) -> int:
    if isinstance(obj, torch.nn.Module):
        return sum(p.numel() * p.element_size() for p in obj.parameters()) + sum(
            b.numel() * b.element_size() for b in obj.buffers())
    return 0


@dataclass
class Result:
    images: list                 # PIL images
    infos: list[dict]            # per image: the parameters actually used (own seed included)
    info: dict                   # the request as run: shared parameters and every seed
    seconds: float = 0.0


@dataclass
class _Resident:
    pipe: object
    components: dict[str, str]   # component name -> cache key
    bytes: int


def _load_class(library: str, class_name: str):
    if class_name == "LDMBertModel":  # the paper's text encoder, shipped inside diffusers' LDM pipeline module
        from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertModel
        return LDMBertModel
    if library == "diffusers":
        import diffusers
        if hasattr(diffusers, class_name):
            return getattr(diffusers, class_name)
    if library == "transformers":
        import transformers
        if "Tokenizer" in class_name:
            return transformers.AutoTokenizer
        if hasattr(transformers, class_name):
            return getattr(transformers, class_name)
    raise ModelLoadError(f"component class {library}.{class_name} is not supported")


class ModelStack:
    def __init__(self, catalog: Catalog | None = None, device: str | None = None, dtype: torch.dtype | None = None,
                 memory_budget_gb: float | None = None, attention_slicing: str = "auto",
                 limits: Limits = DEFAULT_LIMITS, output_dir: str | os.PathLike | None = None,
                 allow_downloads: bool = True, compile: bool | None = None):
        self.catalog = catalog or Catalog.load()
        self.device = pick_device(device)
        self.dtype = dtype or default_dtype(self.device)
        self.memory_budget = int(memory_budget_gb * 2 ** 30) if memory_budget_gb else None
        if attention_slicing not in ("auto", "on", "off"):
            raise ValueError("attention_slicing must be auto, on or off")
        self.attention_slicing = attention_slicing
        self.limits = limits
        self.output_dir = Path(output_dir or "outputs")
        self.allow_downloads = allow_downloads
        # opt-in: torch.compile each UNet (slow first request; see docs/benchmarks.md)
        self.compile = os.environ.get("LDM_TORCH_COMPILE", "") not in ("", "0") if compile is None else compile
        self._decode_seconds: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # vae -> a preview decode
        self._preview_since = 0.0                        # start of this generation or its last preview
        self._resident: OrderedDict[str, _Resident] = OrderedDict()   # LRU order: oldest first
        self._components: dict[str, object] = {}                       # cache key -> module
        self._load_lock = threading.Lock()
        self._device_locks: dict[str, threading.Lock] = {}
        self.load_seconds: dict[str, float] = {}

    @classmethod
    def from_catalog(cls, path=None, **kwargs) -> "ModelStack":
        return cls(Catalog.load(path), **kwargs)

    # ------------------------------------------------------------ status
    def slicing_enabled(self) -> bool:
        if self.attention_slicing == "auto":
            return self.device.type == "mps"
        return self.attention_slicing == "on"

    def describe(self) -> dict:
        if self.attention_slicing == "auto":
            why = ("on (MPS: unfused attention)" if self.slicing_enabled() else
                   "off: PyTorch's scaled_dot_product_attention is already memory-efficient on "
                   f"{self.device.type}, so slicing would only slow it down")
        else:
            why = f"{self.attention_slicing} (set by the operator)"
        return {"device": str(self.device), "dtype": str(self.dtype).replace("torch.", ""),
                "attention_slicing": why,
                "vae": "whole batch while it fits in half the free memory, else one image at a time, else tiles",
                "compile": bool(self.compile), "resident": list(self._resident),
                "resident_mb": round(self.resident_bytes() / 2 ** 20, 1),
                "memory_budget_mb": round(self.memory_budget / 2 ** 20) if self.memory_budget else None}

    def model_choices(self, task: str) -> list[tuple[str, str]]:
        """(label, name) for a model dropdown: each model with what it takes to run here (built-in;
        hub cached and ready; hub, will download N GB; hub, cannot be downloaded here)."""
        return self.catalog.choices(task, prefer_fp16=self.dtype == torch.float16,
                                    allow_downloads=self.allow_downloads)

    def resident_bytes(self) -> int:
        return sum(module_bytes(m) for m in self._components.values())

    def device_lock(self) -> threading.Lock:
        return self._device_locks.setdefault(str(self.device), threading.Lock())

    # ------------------------------------------------------------ loading
    def _root(self, entry: ModelEntry) -> tuple[Path, dict[str, tuple[str | None, bool]]]:
        """The model's folder and, for hub models, each component's (weights variant, pickled?)."""
        if not entry.is_hub:
            root = self.catalog.local_path(entry)
            if not (root / "model_index.json").is_file():
                raise ModelLoadError(f"model {entry.name!r}: its folder {root.name}/ has no model_index.json (not "
                                     f"trained or not installed); see docs/training.md")
            return root, {}
        local_only = not self.allow_downloads
        try:
            plan = hub.model_plan(entry.repo_id, entry.revision, self.dtype == torch.float16, local_only,
                                  entry.pickle_weights)
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

    def _component(self, key: str, cls, path: Path, subfolder: str | None, variant: str | None = None,
                   pickled: bool = False):
        if key in self._components:
            return self._components[key]
        kwargs = {"variant": variant} if variant else {}
        if cls.__name__ != "AutoTokenizer" and not issubclass(cls, type(None)):
            is_model = hasattr(cls, "from_pretrained") and issubclass(cls, torch.nn.Module)
            if is_model:
                kwargs["use_safetensors"] = not pickled   # pickled: torch.load(weights_only=True), see hub.py
                if "transformers" in cls.__module__:
                    kwargs["trust_remote_code"] = False
                    kwargs["dtype"] = self.dtype
                else:                                # an fp16 variant is upcast where the device computes in fp32
                    kwargs["torch_dtype"] = self.dtype
        try:
            if subfolder:
                obj = cls.from_pretrained(path, subfolder=subfolder, **kwargs)
            else:
                obj = cls.from_pretrained(path, **kwargs)
        except Exception as e:
            # the first line of the reason, with this machine's folders left out (users see it)
            why = (str(e).splitlines() or [""])[0][:300].replace(f"{path.parent}{os.sep}", "")
            if isinstance(e, OSError):
                raise ModelLoadError(f"{path.name}/{subfolder or ''}: {why} (only safetensors weights are "
                                     f"loaded)") from None
            raise ModelLoadError(f"{path.name}/{subfolder or ''} could not be loaded: {type(e).__name__}: "
                                 f"{why}") from None
        if isinstance(obj, torch.nn.Module):
            obj = obj.to(self.device).eval().requires_grad_(False)
            self._speed_and_memory(obj)
        self._components[key] = obj
        return obj

    def _speed_and_memory(self, module: torch.nn.Module) -> None:
        """The per-component defaults that bench/run.py measured (docs/benchmarks.md)."""
        if self.device.type == "cpu" and not self.compile:
            native_small_convs(module)
        if hasattr(module, "use_slicing") and hasattr(module, "use_tiling"):
            module.auto_memory = True            # autoencoders: whole batch, one at a time or tiles, as memory allows
        if self.compile and type(module).__name__.startswith("UNet"):
            module.compile()                     # torch.compile in place, on the first call

    def load(self, name_or_entry: str | ModelEntry):
        """The resident pipeline for a catalog model, loading it on first use."""
        entry = name_or_entry if isinstance(name_or_entry, ModelEntry) else self.catalog.entries[name_or_entry]
        with self._load_lock:
            if entry.name in self._resident:
                self._resident.move_to_end(entry.name)
                return self._resident[entry.name].pipe
            t0 = time.perf_counter()
            cls = PIPELINES.get(entry.pipeline)
            if cls is None:
                raise ModelLoadError(f"model {entry.name!r} names unknown pipeline {entry.pipeline!r}")
            root, variants = self._root(entry)
            index = json.loads((root / "model_index.json").read_text())
            shared = index.get("_shared", {})
            import inspect
            wanted = set(inspect.signature(cls.__init__).parameters) - {"self"}
            parts, keys = {}, {}
            try:
                for comp, spec in index.items():
                    if comp.startswith("_") or not isinstance(spec, list) or spec[0] is None:
                        continue
                    name = COMPONENT_ALIASES.get(comp, comp)
                    if name not in wanted or comp in hub.SKIP_COMPONENTS:
                        continue
                    library, class_name = spec
                    comp_cls = _load_class(library, class_name)
                    if comp in shared:  # a component that lives in another models/ folder
                        path, sub = (self.catalog.root / shared[comp]).resolve(), None
                    else:
                        path, sub = root, comp
                    variant, pickled = variants.get(comp, (None, False))
                    key = f"{path}/{sub or ''}:{class_name}:{variant}"
                    parts[name] = self._component(key, comp_cls, path, sub, variant, pickled)
                    keys[name] = key
                missing = wanted - set(parts)
                if missing:
                    raise ModelLoadError(f"model {entry.name!r} lacks components {sorted(missing)}")
                pipe = cls(**parts)
            except ModelLoadError as e:
                self._drop_unreferenced()
                if str(e).startswith("model "):
                    raise
                raise ModelLoadError(f"model {entry.name!r} could not be loaded: {e}") from None
            except Exception:
                self._drop_unreferenced()
                raise
            if hasattr(pipe, "set_progress_bar_config"):
                pipe.set_progress_bar_config(disable=True)
            if self.slicing_enabled() and hasattr(pipe, "enable_attention_slicing"):
                pipe.enable_attention_slicing()
            new_bytes = sum(module_bytes(parts[n]) for n in parts)
            self._resident[entry.name] = _Resident(pipe, keys, new_bytes)
            self._evict_over_budget(keep=entry.name)
            self.load_seconds[entry.name] = time.perf_counter() - t0
            log.info("loaded %s in %.1fs", entry.name, self.load_seconds[entry.name])
            return pipe

    def _drop_unreferenced(self) -> None:
        used = {k for r in self._resident.values() for k in r.components.values()}
        for k in list(self._components):
            if k not in used:
                del self._components[k]
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _evict_over_budget(self, keep: str) -> None:
        if not self.memory_budget:
            return
        while self.resident_bytes() > self.memory_budget and len(self._resident) > 1:
            oldest = next(n for n in self._resident if n != keep)
            log.info("memory budget: evicting %s", oldest)
            del self._resident[oldest]
            self._drop_unreferenced()

    # ------------------------------------------------------------ running
    def run(self, request: Request, callback: StepCallback | None = None) -> Result:
        """Validate, load (once), generate under the device lock. Raises RequestError for bad
        input, ModelLoadError for models that cannot load, GenerationCancelled on interrupt."""
        req, entry = validate(request, self.catalog, self.limits)
        pipe = self.load(entry)
        seeds = resolve_seeds(req.seed, req.num_images)
        t0 = time.perf_counter()
        oom = None
        with self.device_lock():
            callback = _with_deadline(callback, self.limits.max_seconds)   # the clock starts when it runs
            self._preview_since = time.perf_counter()   # previews budget their decodes from here
            try:
                out, size = self._call(pipe, req, entry, seeds, callback)
            except GenerationCancelled as e:
                log.info("%s", e)
                raise
            except RequestError:
                raise
            except ValueError as e:  # a pipeline's check_inputs
                raise RequestError(str(e)) from None
            except (torch.OutOfMemoryError, MemoryError) as e:
                oom = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
                # leaving this block drops the exception, its traceback and the frames holding the tensors
            finally:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
            if oom is not None:
                raise self._out_of_memory(req, entry, oom)
        seconds = time.perf_counter() - t0
        info = self._info(req, entry, size, seeds)
        info["scheduler"] = type(getattr(pipe, "scheduler", None)).__name__
        if getattr(out, "warnings", None):
            info["warnings"] = list(out.warnings)
        infos = [{**{k: v for k, v in info.items() if k != "seeds"}, "seed": s} for s in out.seeds]
        return Result(out.images, infos, info, seconds)

    def _out_of_memory(self, req, entry: ModelEntry, what: str) -> OutOfMemory:
        """Free what can be freed after an out-of-memory error; the error to raise."""
        with self._load_lock:
            others = [n for n in self._resident if n != entry.name]
            for name in others:
                del self._resident[name]
            self._drop_unreferenced()   # gc.collect() and, on CUDA, torch.cuda.empty_cache()
        log.warning("out of memory in %s (%s); unloaded %s", entry.name, what, others or "nothing else")
        n = getattr(req, "num_images", 1)
        size = f" of {req.width}x{req.height}" if getattr(req, "width", None) else ""
        return OutOfMemory(f"out of memory while generating {n} image{'s' * (n > 1)}{size} with {entry.name}; "
                           f"the server freed what it could and keeps running. Try fewer images, a smaller size "
                           f"or fewer steps.")

    def _call(self, pipe, req, entry: ModelEntry, seeds, callback):
        if isinstance(req, Text2ImgRequest):
            out = pipe(req.prompt, req.negative_prompt, req.height, req.width, req.steps, req.guidance_scale, seeds,
                       req.sampler, callback)
            return out, (req.width, req.height)
        if isinstance(req, Layout2ImgRequest):
            boxes = [(b.label, b.box) for b in req.boxes]
            out = pipe(req.prompt, boxes, req.negative_prompt, req.height, req.width, req.steps, req.guidance_scale,
                       seeds, req.sampler, callback)
            return out, (req.width, req.height)
        if isinstance(req, SuperResRequest):
            out = pipe(req.image, req.steps, seeds, req.sampler, callback, back_projection=req.back_projection,
                       average=req.average)
            return out, out.images[0].size
        if isinstance(req, InpaintRequest):
            w = req.width or req.image.width
            h = req.height or req.image.height
            out = pipe(req.prompt, req.image, req.mask, req.negative_prompt, h, w, req.steps, req.guidance_scale,
                       seeds, req.sampler, callback, keep_unmasked=req.keep_unmasked,
                       mask_downsampling=req.mask_downsampling)
            return out, (w, h)
        raise RequestError(f"unknown request type {type(req).__name__}")

    @staticmethod
    def _info(req, entry: ModelEntry, size, seeds) -> dict:
        info = {"task": req.task, "model": entry.name, "steps": req.steps, "sampler": req.sampler,
                "size": f"{size[0]}x{size[1]}", "seeds": seeds, "seed": seeds[0]}
        if isinstance(req, SuperResRequest):
            info.update(average=req.average, back_projection=req.back_projection)
        else:
            info.update(prompt=req.prompt, negative_prompt=req.negative_prompt, guidance_scale=req.guidance_scale)
        if isinstance(req, InpaintRequest):
            info.update(keep_unmasked=req.keep_unmasked, mask_downsampling=req.mask_downsampling)
        if isinstance(req, Layout2ImgRequest):
            info["boxes"] = [{"label": b.label, "box": list(b.box)} for b in req.boxes]
        return info

    @torch.inference_mode()
    def preview(self, request: Request, latents: torch.Tensor):
        """A cheap look at the first image's current latents, called from inside a step
        callback: decoded when the latents are small and a decode costs at most PREVIEW_BUDGET
        of the generation time since the previous preview (or the start), else a false-colour
        view of the latent channels (well under a millisecond). A decode per preview would cost
        about a tenth of a built-in 64x64 generation on 2 CPU cores (bench/run.py, "overhead")."""
        from .pipelines.common import decode_latents, latent_preview, to_pil
        entry = self.catalog.get(request.model, request.task)
        resident = self._resident.get(entry.name)
        if resident is None:
            return None
        lat, vae = latents[:1], resident.pipe.vae
        now = time.perf_counter()
        since, self._preview_since = self._preview_since, now
        if lat.shape[-1] * lat.shape[-2] <= 32 * 32:
            cost = self._decode_seconds.get(vae)
            if cost is None or cost <= PREVIEW_BUDGET * (now - since):
                image = to_pil(decode_latents(vae, lat.to(vae.dtype)))[0]
                self._preview_since = time.perf_counter()
                self._decode_seconds[vae] = self._preview_since - now
                return image
        return latent_preview(lat)[0]

    def save(self, result: Result, out_dir: str | os.PathLike | None = None) -> list[Path]:
        """Write each image as a PNG carrying its own parameters."""
        from .provenance import save_png
        d = Path(out_dir) if out_dir else self.output_dir
        return [save_png(im, info, d) for im, info in zip(result.images, result.infos)]
