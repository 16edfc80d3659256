"""What the studio has made: every PNG in its output folder that carries its parameters, newest
first (results of this server and of earlier runs alike). Parameters are read once per file.
Each owner's results live in a folder of their own (`owner_folder`)."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from .provenance import read_parameters


@dataclass(frozen=True)
class Entry:
    path: Path
    params: dict
    mtime: float

    @property
    def caption(self) -> str:
        p = self.params
        what = p.get("prompt") or ", ".join(b.get("label", "") for b in p.get("boxes", [])) or p.get("model", "")
        return f"{p.get('task', '?')} · {what[:40]} · seed {p.get('seed', '?')}"


def owner_folder(owner: str) -> str:
    """The folder name of an owner's results ("user:alice" -> 16 hex digits: names no one)."""
    return "by-" + hashlib.sha256(owner.encode("utf-8")).hexdigest()[:16]


class History:
    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._seen: dict[Path, tuple[float, dict | None]] = {}     # path -> (mtime, parameters)

    def entries(self, limit: int = 200, owner: str | None = None, everything: bool = False) -> list[Entry]:
        """The newest `limit` results of `owner` (of every owner with `everything`), newest first."""
        if everything:
            folder = self.folder
        elif owner:
            folder = self.folder / owner_folder(owner)
        else:
            return []                  # results of nobody in particular are listed to nobody
        found = []
        for path in folder.rglob("*.png") if folder.is_dir() else []:
            try:
                mtime = path.stat().st_mtime
            except OSError:            # removed meanwhile
                continue
            found.append((mtime, path))
        found.sort(reverse=True)
        out = []
        for mtime, path in found:
            params = self._params(path, mtime)
            if params:
                out.append(Entry(path, params, mtime))
                if len(out) == limit:
                    break
        return out

    def _params(self, path: Path, mtime: float) -> dict | None:
        seen = self._seen.get(path)
        if seen is None or seen[0] != mtime:
            try:
                seen = (mtime, read_parameters(path))
            except Exception:          # not a readable PNG: not a result
                seen = (mtime, None)
            self._seen[path] = seen
        return seen[1]
