"""Offline mirrors of the catalog's hub repositories, for tests and benchmarks.

Each `RepoSpec` copies one hub repository at the commit the catalog pins: its complete file
listing with the published sizes (pickles, both precisions, the safety checker, the README:
everything the hub holds), its `model_index.json`, and every configuration as published.
`write_mirror()` lays it out as a Hugging Face cache (`models--org--name/blobs`,
`snapshots/<commit>/...` symlinks, and `trees/<commit>.json`, the listing huggingface_hub
keeps beside every snapshot it downloads), so the studio's real download path runs against
it with `HF_HUB_OFFLINE=1`. Weights are random; `scale="tiny"` shrinks channel widths,
text-encoder depth and vocabularies (`SHRINK`) and keeps the structure (block types and
counts, layers per block, attention heads, cross-attention width, in/out channels, sample
size); `scale="full"` keeps the published sizes (bench/run.py --section hub).

Every pickle in a mirror is booby-trapped: unpickling it creates `marker`. The exception is a
pickle the studio is meant to read (a catalog entry with `pickle_weights = true`, whose pinned
commit has no safetensors): that one is a real `torch.save` state dict, read through
`torch.load(weights_only=True)`. Safetensors files of components the studio never runs are
garbage, so reading one fails loudly.

Where the facts come from (stored huggingface.co pages of each repository: tree, blob,
blame and commit views at the pinned commit; "rebuilt" = not read verbatim, reconstructed and
checked to give the listed byte size and line count) is said beside each spec.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache
from huggingface_hub.file_download import repo_folder_name

from .specs import (  # noqa: F401  (re-exported: the public names and the shared configs)
    _ADDED,
    _CLIP_PREPROCESSOR,
    _CLIP_SPECIAL,
    _CLIP_TEXT,
    _CLIP_TOKENIZER,
    _GLIGEN_SIZES,
    _SAFETY,
    _SD_UNET,
    _SD_VAE,
    GB,
    GLIGEN,
    KB,
    LDM_CELEBAHQ,
    LDM_SUPERRES,
    LDM_TEXT2IM,
    MB,
    REPOS,
    SD_INPAINT,
    SHRINK,
    RepoSpec,
    _sd_listing,
)
from .writers import _model, _trap, _write_files, bert_vocab, clip_vocab, mirror_config  # noqa: F401


def write_mirror(cache_dir: str | os.PathLike, spec: RepoSpec, marker: str | os.PathLike, scale: str = "tiny",
                 prefer_fp16: bool = False) -> Path:
    """Lay `spec` out in the Hugging Face cache at `cache_dir`; returns the snapshot folder."""
    storage = Path(cache_dir) / repo_folder_name(repo_id=spec.repo_id, repo_type="model")
    snapshot = storage / "snapshots" / spec.commit
    blobs = storage / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    entries = {}
    for path, content in _write_files(spec, scale, Path(marker), prefer_fp16).items():
        data_path = content if isinstance(content, Path) else None
        h = hashlib.sha256()
        if data_path is None:
            h.update(content)
        else:
            with open(data_path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 24), b""):
                    h.update(chunk)
        blob = blobs / h.hexdigest()
        if not blob.exists():
            if data_path is None:
                blob.write_bytes(content)
            else:
                os.replace(data_path, blob)
        link = snapshot / path
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
        is_lfs = path.endswith((".safetensors", ".bin", ".ckpt", ".jpg"))
        sha1 = hashlib.sha1(path.encode()).hexdigest()
        entries[path] = TreeCacheEntry(size=spec.files[path], blob_id=sha1,
                                       lfs_sha256=h.hexdigest() if is_lfs else None,
                                       lfs_size=spec.files[path] if is_lfs else None)
    write_tree_cache(str(storage), spec.commit, entries)     # what huggingface_hub writes beside a download
    return snapshot


def write_all(cache_dir: str | os.PathLike, marker: str | os.PathLike, scale: str = "tiny") -> dict[str, Path]:
    return {repo: write_mirror(cache_dir, spec, marker, scale) for repo, spec in REPOS.items()}
