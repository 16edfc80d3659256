"""Hub checkpoints, pinned to a commit: which files a model needs, what they weigh, and
fetching exactly those (from the network, or from the local Hugging Face cache offline).

The repository's file listing at the pinned commit decides. It comes from the hub's tree
endpoint online, or offline from the copy huggingface_hub keeps beside the snapshot
(`<cache>/models--<org>--<name>/trees/<commit>.json`, written by every download). From it:

- `model_index.json`, then for every component it names except those the studio never runs
  (`SKIP_COMPONENTS`: the safety checker and its feature extractor, an image encoder):
- the component's configuration and tokenizer files (`*.json`, `*.txt`, `*.model`);
- its weights as safetensors: the full-precision file when the repository has one, else the
  `fp16` variant (upcast on load when the device computes in fp32); on a device that
  computes in fp16 the `fp16` variant first. One precision, never both.
- Never code. Never a pickle (`.bin`, `.ckpt`, `.pt`, ...), except for a catalog entry that
  says `pickle_weights = true`: a pinned commit that holds no safetensors at all. Those
  weights are read by diffusers' and transformers' `torch.load(weights_only=True)`, which
  rebuilds tensors and refuses any other object a pickle names (tests/test_hub.py feeds it a
  malicious pickle). Without the flag, a component whose only weights are pickles is an
  error that says so.
"""
from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import HfApi, constants, hf_hub_download, snapshot_download
from huggingface_hub._tree_cache import read_tree_cache
from huggingface_hub.file_download import repo_folder_name
from huggingface_hub.hf_api import RepoFile

SKIP_COMPONENTS = frozenset({"safety_checker", "feature_extractor", "image_encoder"})
TEXT_SUFFIXES = (".json", ".txt", ".model")           # configs, vocabularies, merges, sentencepiece models
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle")
VARIANTS = (None, "fp16")                             # what the studio loads: full precision or fp16
COMMIT = re.compile(r"^[0-9a-f]{40}$")
# diffusion_pytorch_model.safetensors, model.fp16.safetensors, model-00001-of-00002.safetensors, ...
_WEIGHTS = re.compile(r"^(?P<stem>[^./]+?)(?P<shard>-\d{5}-of-\d{5})?(?:\.(?P<variant>\w+))?\.safetensors$")
_INDEX = re.compile(r"^(?P<stem>[^./]+)\.safetensors\.index(?:\.(?P<variant>\w+))?\.json$")
_PICKLE = re.compile(r"^(?P<stem>diffusion_pytorch_model|pytorch_model)(?:\.(?P<variant>\w+))?\.bin$")


class HubError(RuntimeError):
    """A hub model cannot be planned or fetched; the message says why and is safe to show."""


@dataclass(frozen=True)
class Plan:
    """What one hub model needs at one commit."""
    repo_id: str
    revision: str
    files: dict[str, int]                               # path in the repository -> bytes
    variants: dict[str, str | None] = field(default_factory=dict)  # component -> weights variant (None: full)
    pickles: frozenset[str] = frozenset()               # components whose weights are pickles (pickle_weights)

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())


def gigabytes(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def offline() -> bool:
    """True when huggingface_hub is told not to touch the network (HF_HUB_OFFLINE)."""
    return bool(constants.HF_HUB_OFFLINE)


@lru_cache(maxsize=1)
def reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's host answers a TCP connection (once per process)."""
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout).close()
        return True
    except OSError:
        return False


def storage_folder(repo_id: str) -> Path:
    return Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")


def listing(repo_id: str, revision: str, local_only: bool) -> dict[str, int]:
    """{path: bytes} of every file of the repository at `revision` (a commit): the tree listing
    huggingface_hub cached beside the snapshot (its `_tree_cache` module, huggingface-hub 2.4 as
    pinned), else the hub's tree endpoint, else offline what the snapshot folder holds."""
    entries = read_tree_cache(str(storage_folder(repo_id)), revision)
    if entries is not None:
        return {p: e.lfs_size or e.size for p, e in entries.items()}
    if not local_only:
        files = HfApi().list_repo_tree(repo_id, revision=revision, recursive=True)
        return {f.path: (f.lfs.size if f.lfs else f.size) for f in files if isinstance(f, RepoFile)}
    snapshot = storage_folder(repo_id) / "snapshots" / revision   # a cache written without a tree listing
    if snapshot.is_dir():
        return {p.relative_to(snapshot).as_posix(): p.stat().st_size for p in snapshot.rglob("*") if p.is_file()}
    raise HubError("not downloaded")


def _weights(folder: str, names: dict[str, int], prefer_fp16: bool,
             pickle_weights: bool) -> tuple[list[str], str | None, bool]:
    """One component's weight files for one variant: (files, variant, are they pickles)."""
    order = ("fp16", None) if prefer_fp16 else (None, "fp16")
    for pattern, is_pickle in ((_WEIGHTS, False), (_PICKLE, True)):
        if is_pickle and not pickle_weights:
            continue
        found: dict[str | None, list[str]] = {}
        for path in names:
            m = pattern.match(path[len(folder) + 1:])
            if m and m["variant"] in VARIANTS:
                found.setdefault(m["variant"], []).append(path)
        if not is_pickle:          # a sharded checkpoint's index goes with its shards
            for path in names:
                m = _INDEX.match(path[len(folder) + 1:])
                if m and m["variant"] in found:
                    found[m["variant"]].append(path)
        for variant in order:
            if variant in found:
                return sorted(found[variant]), variant, is_pickle
    pickles = [p for p in names if p.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise HubError(f"component {folder!r} has only pickle weights ({', '.join(sorted(pickles))}); the studio "
                       f"loads safetensors only unless the catalog entry sets pickle_weights = true")
    return [], None, False


def plan(repo_id: str, revision: str, index: dict, files: dict[str, int], prefer_fp16: bool = False,
         pickle_weights: bool = False) -> Plan:
    """The files a model needs, from its `model_index.json` and the repository listing."""
    chosen = {"model_index.json": files.get("model_index.json", 0)}
    variants = {}
    pickles = set()
    for comp, spec in index.items():
        if comp.startswith("_") or comp in SKIP_COMPONENTS or not isinstance(spec, list) or spec[0] is None:
            continue
        inside = {p: n for p, n in files.items() if p.startswith(comp + "/") and "/" not in p[len(comp) + 1:]}
        if not inside:
            raise HubError(f"component {comp!r} is named in model_index.json but has no folder at {revision[:12]}")
        weights, variant, is_pickle = _weights(comp, inside, prefer_fp16, pickle_weights)
        texts = [p for p in inside if p.endswith(TEXT_SUFFIXES) and not _INDEX.match(p[len(comp) + 1:])]
        for p in weights + texts:
            chosen[p] = inside[p]
        if weights:
            variants[comp] = variant
        if is_pickle:
            pickles.add(comp)
    return Plan(repo_id, revision, chosen, variants, frozenset(pickles))


def model_plan(repo_id: str, revision: str | None, prefer_fp16: bool = False, local_only: bool = False,
               pickle_weights: bool = False) -> Plan:
    """Plan a pinned hub model: its listing and model_index.json (fetched or read from the cache)."""
    if not revision or not COMMIT.match(revision):
        raise HubError(f"{repo_id}: the catalog must pin a 40-hex commit, got revision {revision!r}")
    why_local = ("" if local_only else "this machine is offline (HF_HUB_OFFLINE)" if offline() else
                 "the hub cannot be reached from here" if not reachable() else "")
    local_only = local_only or bool(why_local)
    try:
        files = listing(repo_id, revision, local_only)
        index = json.loads(Path(hf_hub_download(repo_id, "model_index.json", revision=revision,
                                                local_files_only=local_only)).read_text())
    except Exception as e:
        why = f"not downloaded, and {why_local or 'downloads are off'}" if local_only else type(e).__name__
        raise HubError(why) from None
    return plan(repo_id, revision, index, files, prefer_fp16, pickle_weights)


def missing(p: Plan) -> dict[str, int]:
    """The planned files not yet in the local cache."""
    snapshot = storage_folder(p.repo_id) / "snapshots" / p.revision
    return {f: n for f, n in p.files.items() if not (snapshot / f).exists()}


def fetch(p: Plan, local_only: bool = False) -> Path:
    """Download the planned files (nothing else) into the cache; returns the snapshot folder."""
    pattern = [glob_escape(f) for f in p.files]
    return Path(snapshot_download(p.repo_id, revision=p.revision, allow_patterns=pattern,
                                  local_files_only=local_only or offline() or not missing(p)))


def glob_escape(path: str) -> str:
    """A file name as an fnmatch pattern that matches only itself."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in path)


@dataclass(frozen=True)
class Availability:
    can_run: bool        # loads now, or downloads first
    note: str            # for the UI and `python -m ldm_core models`


def availability(repo_id: str, revision: str | None, prefer_fp16: bool = False, allow_downloads: bool = True,
                 pickle_weights: bool = False) -> Availability:
    """Cached and ready / will download N GB / cannot be downloaded here."""
    try:
        cached = model_plan(repo_id, revision, prefer_fp16, local_only=True, pickle_weights=pickle_weights)
        todo = missing(cached)
        if not todo:
            return Availability(True, f"hub, cached and ready ({gigabytes(cached.total_bytes)})")
    except HubError as e:
        if "not downloaded" not in str(e):
            return Availability(False, f"hub, cannot run: {e}")
    if not allow_downloads or offline():
        return Availability(False, "hub, not downloaded; cannot be downloaded here (offline)")
    if not reachable():
        return Availability(False, "hub, not downloaded; cannot be downloaded here (the hub is unreachable)")
    try:
        todo = missing(model_plan(repo_id, revision, prefer_fp16, pickle_weights=pickle_weights))
    except Exception as e:
        return Availability(False, f"hub, cannot run: {str(e) or type(e).__name__}")
    return Availability(True, f"hub, will download {gigabytes(sum(todo.values()))} on first use")
