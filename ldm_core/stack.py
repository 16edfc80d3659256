"""The resident model stack: the one owner of loaded models. It loads, shares, evicts, locks
and runs one task request; it knows nothing of compositions or of who asked (`service.py`).

- loads a catalog entry once per process (safetensors only, never remote code) and keeps
  it on the device; components two models share are loaded once and held once;
- device CUDA > MPS > CPU, fp16 on CUDA (`device.py`); attention slicing "auto" (on only where
  it lowers peak memory: MPS), "on" or "off"; a request's speed-ups (`speedups.py`);
- autoencoders decode the whole batch, one image at a time or in tiles as memory allows
  (`pipelines/latents.py`); `compile=True` (or LDM_TORCH_COMPILE=1) compiles each UNet, opt-in;
- a memory budget: loading past it evicts the least-recently used pipelines first;
- one lock per device serialises generation, and a server runs it all on one device thread
  (`submit`); on CPU a generation takes the cores other programs leave free (`cpu.py`);
- `run(request)` generates through the request's task module (`ldm_core.tasks`);
- out of memory during a generation frees what it can (the failed run's tensors, the other
  resident models, the CUDA cache) and raises `OutOfMemory` with a message for the user.
"""
from __future__ import annotations

import gc
import inspect
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch

from . import hub
from .catalog import Catalog, ModelEntry
from .cpu import CpuShare
from .device import default_dtype, module_bytes, pick_device
from .limits import DEFAULT_LIMITS, Limits, TimeLimit
from .options import NO_SPEEDUPS
from .loading import ModelLoadError, component_class, load_component, model_folder
from .pipelines import COMPONENT_ALIASES
from .pipelines.common import GenerationCancelled, StepCallback, resolve_seeds
from .preview import Previewer
from .provenance import save_png
from .requests import RequestError
from .results import Result, result_of
from .speedups import applied, bf16_unet, is_unet, plan, prepare_module
from .tasks import TASKS, pipeline_class
from .validation import validate

log = logging.getLogger("ldm_core.stack")
__all__ = ["ModelStack", "Result", "ModelLoadError", "OutOfMemory", "TimeLimit", "pick_device"]


_READING = threading.Lock()   # from_pretrained patches torch globally while it reads: one read at a time


class OutOfMemory(RuntimeError):
    """A generation ran out of memory; what could be freed was. The message is safe to show."""


@dataclass
class _Resident:
    pipe: object
    components: dict[str, str]   # component name -> cache key


class ModelStack:
    def __init__(self, catalog: Catalog | None = None, device: str | None = None, dtype: torch.dtype | None = None,
                 memory_budget_gb: float | None = None, attention_slicing: str = "auto",
                 limits: Limits = DEFAULT_LIMITS, output_dir: str | os.PathLike | None = None,
                 allow_downloads: bool = True, compile: bool | None = None, threads: int | None = None):
        if attention_slicing not in ("auto", "on", "off"):
            raise ValueError("attention_slicing must be auto, on or off")
        self.catalog = (catalog or Catalog.load()).check_tasks(TASKS)
        self.device = pick_device(device)
        self.dtype = dtype or default_dtype(self.device)
        self.memory_budget = int(memory_budget_gb * 2 ** 30) if memory_budget_gb else None
        self.attention_slicing = attention_slicing
        self.limits = limits
        self.allow_downloads = allow_downloads
        self.output_dir = Path(output_dir or "outputs")
        if compile is None:      # opt-in: torch.compile each UNet (a slow first request)
            compile = os.environ.get("LDM_TORCH_COMPILE", "") not in ("", "0")
        self.compile = compile
        self.previews = Previewer()
        # threads as the other programs leave cores free, at most `threads` (a CPU stack beside others: pool.py)
        self.cpu = CpuShare(most=threads, enabled=self.device.type == "cpu")
        self._resident: OrderedDict[str, _Resident] = OrderedDict()   # LRU order: oldest first
        self._components: dict[str, object] = {}                       # cache key -> module
        self._load_lock = threading.Lock()
        self._device_locks: dict[str, threading.Lock] = {}
        self._worker: ThreadPoolExecutor | None = None
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

    def resident_bytes(self) -> int:
        return sum(module_bytes(m) for m in self._components.values())

    def holds(self, model: str) -> bool:   # resident here, in either precision
        return model in self._resident or f"{model}@bf16" in self._resident

    def device_lock(self) -> threading.Lock:
        return self._device_locks.setdefault(str(self.device), threading.Lock())

    def submit(self, fn, *args) -> Future:
        """`fn(*args)` on the stack's one device thread (started on first use): on CPU each thread
        running kernels gets its own OpenMP team, and teams that outnumber the cores stop spinning
        (docs/benchmarks.md, "the request path")."""
        with self._load_lock:
            if self._worker is None:
                self._worker = ThreadPoolExecutor(1, thread_name_prefix="ldm-device",
                                                  initializer=torch.set_num_threads, initargs=(self.cpu.most,))
        return self._worker.submit(fn, *args)

    # ------------------------------------------------------------ loading
    def _component(self, key: str, cls, path: Path, subfolder: str | None, variant: str | None, pickled: bool,
                   bf16: bool = False):
        """A component, loaded once and shared by every model that names the same files (a UNet in
        bfloat16 is another component: `speedups.bf16_unet`)."""
        bf16 = bf16 and is_unet(cls)
        full = f"{key}:bf16" if bf16 else key
        if full not in self._components:
            obj = self._components.get(key)
            if obj is None:
                with _READING:
                    obj = load_component(cls, path, subfolder, self.dtype, variant, pickled)
            if isinstance(obj, torch.nn.Module) and key not in self._components:
                obj = prepare_module(obj.to(self.device).eval().requires_grad_(False), self.device, self.compile)
            self._components[full] = bf16_unet(obj) if bf16 else obj
        return self._components[full]

    def _parts(self, entry: ModelEntry, cls, bf16: bool = False) -> tuple[dict, dict]:
        """The components `cls` takes, from the model's model_index.json: {name: module}, {name: cache key}."""
        root, variants = model_folder(self.catalog, entry, self.dtype == torch.float16, self.allow_downloads)
        index = json.loads((root / "model_index.json").read_text())
        shared = index.get("_shared", {})
        wanted = set(inspect.signature(cls.__init__).parameters) - {"self"}
        parts, keys = {}, {}
        for comp, spec in index.items():
            if comp.startswith("_") or not isinstance(spec, list) or spec[0] is None:
                continue
            name = COMPONENT_ALIASES.get(comp, comp)
            if name not in wanted or comp in hub.SKIP_COMPONENTS:
                continue
            library, class_name = spec
            if comp in shared:  # a component that lives in another models/ folder
                path, sub = (self.catalog.root / shared[comp]).resolve(), None
            else:
                path, sub = root, comp
            variant, pickled = variants.get(comp, (None, False))
            cls_ = component_class(library, class_name)
            keys[name] = f"{path}/{sub or ''}:{class_name}:{variant}" + (":bf16" if bf16 and is_unet(cls_) else "")
            parts[name] = self._component(keys[name].removesuffix(":bf16"), cls_, path, sub, variant, pickled, bf16)
        missing = wanted - set(parts)
        if missing:
            raise ModelLoadError(f"model {entry.name!r} lacks components {sorted(missing)}")
        return parts, keys

    def load(self, name_or_entry: str | ModelEntry, bf16: bool = False):
        """The resident pipeline for a catalog model, loading it on first use (with its UNet in
        bfloat16: another resident pipeline, `name@bf16`)."""
        entry = name_or_entry if isinstance(name_or_entry, ModelEntry) else self.catalog.entries[name_or_entry]
        key = f"{entry.name}@bf16" if bf16 else entry.name
        with self._load_lock:
            if key in self._resident:
                self._resident.move_to_end(key)
                return self._resident[key].pipe
            t0 = time.perf_counter()
            try:
                cls = pipeline_class(entry.task, entry.pipeline)
            except KeyError as e:
                raise ModelLoadError(f"model {entry.name!r}: {e.args[0]}") from None
            try:
                parts, keys = self._parts(entry, cls, bf16)
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
            if hasattr(pipe, "vae"):
                self.previews.prepare(pipe.vae)   # a cheap preview's latent -> RGB map: found, or fitted once
            self._resident[key] = _Resident(pipe, keys)
            self._evict_over_budget(keep=key)
            self.load_seconds[key] = time.perf_counter() - t0
            log.info("loaded %s in %.1fs", key, self.load_seconds[key])
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
    def run(self, request, callback: StepCallback | None = None) -> Result:
        """One task request (checked here unless it is `Checked` already), its model loaded once,
        generated under the device lock. Raises RequestError for bad input, ModelLoadError for
        models that cannot load, GenerationCancelled on interrupt, TimeLimit from the callback."""
        checked = validate(request, self.catalog, self.limits)
        req, entry = checked.request, checked.entry
        task = TASKS[checked.task.name]          # the registry's task now (the tests may wrap its call)
        speed = plan(getattr(req, "speedups", None) or NO_SPEEDUPS, entry, self.device)
        pipe = self.load(entry, speed.bf16)
        seeds = resolve_seeds(req.seed, req.num_images)
        t0 = time.perf_counter()
        oom = None
        with self.device_lock():
            callback = self.cpu.wrap(callback)
            self.cpu.start()
            self.previews.start()
            try:
                with applied(speed, pipe):
                    out = task.call(pipe, req, seeds, callback)
                out.info = {**out.info, "speedups": speed.describe()}
            except GenerationCancelled as e:
                log.info("%s", e)
                raise
            except (RequestError, TimeLimit):
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
        return result_of(checked, out, seeds, time.perf_counter() - t0)

    def _out_of_memory(self, req, entry: ModelEntry, what: str) -> OutOfMemory:
        """Free what can be freed after an out-of-memory error; the error to raise."""
        with self._load_lock:
            others = [n for n in self._resident if n.split("@")[0] != entry.name]
            for name in others:
                del self._resident[name]
            self._drop_unreferenced()   # gc.collect() and, on CUDA, torch.cuda.empty_cache()
        log.warning("out of memory in %s (%s); unloaded %s", entry.name, what, others or "nothing else")
        n = getattr(req, "num_images", 1)
        size = f" of {req.width}x{req.height}" if getattr(req, "width", None) else ""
        return OutOfMemory(f"out of memory while generating {n} image{'s' * (n > 1)}{size} with {entry.name}; "
                           f"the server freed what it could and keeps running. Try fewer images, a smaller size "
                           f"or fewer steps.")

    def preview(self, model: str, latents: torch.Tensor):
        """A cheap look at the first image's current latents (`preview.py`), from a step callback;
        None while `model` is not resident."""
        resident = self._resident.get(model) or self._resident.get(f"{model}@bf16")
        return None if resident is None else self.previews.look(resident.pipe.vae, latents)

    def save(self, result: Result, out_dir: str | os.PathLike | None = None) -> list[Path]:
        """Write each image as a PNG carrying its own parameters."""
        folder = Path(out_dir) if out_dir else self.output_dir
        return [save_png(im, info, folder) for im, info in zip(result.images, result.per_image)]

