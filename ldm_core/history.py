"""What the studio has made: every PNG in its output folder that carries its parameters, newest
first (results of this server and of earlier runs alike). Each owner's results live in a folder of
their own (`owner_folder`); an owner sees, stars, deletes and zips only what is theirs (everything
with `everything`, which may see and zip all, but still star and delete only their own).

A listing stats every file and reads a PNG's parameters once per (path, mtime), from its text
chunks before the image data (`png_parameters`), so turning a page opens no PNG. Favourites are a
small JSON file in the owner's folder (`favourites.json`, written atomically), not in the PNGs."""
from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import tempfile
import threading
import time
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from .provenance import read_parameters

FAVOURITES = "favourites.json"
PER_PAGE = 24
SIGNATURE = b"\x89PNG\r\n\x1a\n"
KEY = b"ldm_studio"
ZIP_AGE = 3600                 # s: zips made for downloads are removed after this


class HistoryError(ValueError):
    """A request on results that is not allowed (another owner's, no owner) or names none."""


@dataclass(frozen=True)
class Entry:
    path: Path
    params: dict
    mtime: float

    @property
    def what(self) -> str:
        """What it shows: the prompt, else the layout's box labels, the class, the model."""
        p = self.params
        return p.get("prompt") or ", ".join(_labels(p)) or str(p.get("class_name") or p.get("model", ""))

    @property
    def caption(self) -> str:
        return f"{self.params.get('task', '?')} · {self.what} · seed {self.params.get('seed', '?')}"

    @cached_property
    def words(self) -> str:
        """What a search looks in, lower case: the prompt, the box labels, the class name."""
        p = self.params
        return "\n".join([str(p.get("prompt") or ""), *_labels(p), str(p.get("class_name") or "")]).lower()


def _labels(params: dict) -> list[str]:
    boxes = params.get("boxes")
    return [str(b.get("label", "")) for b in boxes if isinstance(b, dict)] if isinstance(boxes, list) else []


@dataclass(frozen=True)
class Query:
    text: str = ""          # a substring of the prompt or a box label, any case ("": every result)
    task: str = ""          # "": every task
    model: str = ""         # "": every model
    favourites: bool = False

    def keeps(self, entry: Entry, favourites: set[Path]) -> bool:
        p = entry.params
        return ((not self.task or p.get("task") == self.task) and (not self.model or p.get("model") == self.model)
                and (not self.favourites or entry.path in favourites)
                and self.text.strip().lower() in entry.words)


@dataclass(frozen=True)
class Page:
    entries: list[Entry]    # this page's results, newest first
    number: int             # 1-based, within 1..pages
    pages: int              # at least 1
    total: int              # results the query keeps
    tasks: list[str]        # the tasks and models among every result listed (the filters' choices)
    models: list[str]
    favourites: set[Path] = field(default_factory=set)    # of this page's results, the owner's favourites


def owner_folder(owner: str) -> str:
    """The folder name of an owner's results ("user:alice" -> 16 hex digits: names no one)."""
    return "by-" + hashlib.sha256(owner.encode("utf-8")).hexdigest()[:16]


def png_parameters(path: Path) -> dict | None:
    """The studio's parameters of a PNG (None: none, or not a PNG), read from the text chunks before
    its image data without decoding it; a file that has them after the image data is read whole."""
    with open(path, "rb") as f:
        if f.read(8) != SIGNATURE:
            return None
        while len(head := f.read(8)) == 8:
            length, kind = struct.unpack(">I4s", head)
            if kind in (b"IDAT", b"IEND"):
                break
            if kind not in (b"iTXt", b"tEXt", b"zTXt"):
                f.seek(length + 4, os.SEEK_CUR)
                continue
            data = f.read(length)
            f.seek(4, os.SEEK_CUR)                        # the CRC
            key, _, rest = data.partition(b"\0")
            if key == KEY:
                return json.loads(_chunk_text(kind, rest))
    return read_parameters(path)


def _chunk_text(kind: bytes, rest: bytes) -> str:
    if kind == b"tEXt":
        return rest.decode("latin-1")
    if kind == b"zTXt":
        return zlib.decompress(rest[1:]).decode("latin-1")
    compressed, text = rest[0], rest[2:].split(b"\0", 2)[2]          # iTXt: flag, method, language, keyword
    return (zlib.decompress(text) if compressed else text).decode("utf-8")


def _scan(root: Path) -> list[tuple[float, str]]:
    """(mtime, path) of every PNG under `root`, symbolic links to folders not followed (paths as
    strings: a Path each would cost more than the stat)."""
    found, folders = [], [root]
    while folders:
        try:
            listing = os.scandir(folders.pop())
        except OSError:                  # gone, or not a folder
            continue
        with listing:
            for item in listing:
                if item.is_dir(follow_symlinks=False):
                    folders.append(item.path)
                elif item.name.endswith(".png"):
                    try:
                        found.append((item.stat().st_mtime, item.path))
                    except OSError:      # removed meanwhile
                        pass
    return found


class History:
    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self._seen: dict[str, tuple[float, Entry | None]] = {}      # path -> (mtime, the entry: None if none)
        self._lock = threading.Lock()                               # favourites' read-modify-write
        self._zips: Path | None = None

    # ------------------------------------------------------------ listing
    def entries(self, limit: int = 200, owner: str | None = None, everything: bool = False) -> list[Entry]:
        """The newest `limit` results of `owner` (of every owner with `everything`), newest first."""
        out = []
        for mtime, path in self._found(owner, everything):
            if entry := self._entry(path, mtime):
                out.append(entry)
                if len(out) == limit:
                    break
        return out

    def page(self, owner: str | None, everything: bool = False, query: Query = Query(), number: int = 1,
             per_page: int = PER_PAGE) -> Page:
        """Page `number` (clamped to those there are) of the results `query` keeps, newest first."""
        listed = [e for mtime, path in self._found(owner, everything) if (e := self._entry(path, mtime))]
        favourites = self.favourites(owner)
        kept = [e for e in listed if query.keeps(e, favourites)]
        pages = max(1, math.ceil(len(kept) / per_page))
        number = min(max(1, number), pages)
        shown = kept[(number - 1) * per_page:number * per_page]
        return Page(shown, number, pages, len(kept), sorted({str(e.params.get("task", "?")) for e in listed}),
                    sorted({str(e.params.get("model", "?")) for e in listed}),
                    {e.path for e in shown if e.path in favourites})

    def _found(self, owner: str | None, everything: bool) -> list[tuple[float, str]]:
        if everything:
            root = self.folder
        elif owner:
            root = self.folder / owner_folder(owner)
        else:
            return []                  # results of nobody in particular are listed to nobody
        return sorted(_scan(root), reverse=True)

    def _entry(self, path: str, mtime: float) -> Entry | None:
        seen = self._seen.get(path)
        if seen is None or seen[0] != mtime:
            try:
                params = png_parameters(path)
            except Exception:          # not a readable PNG, or broken parameters: not a result
                params = None
            seen = (mtime, Entry(Path(path), params, mtime) if isinstance(params, dict) and params else None)
            self._seen[path] = seen
        return seen[1]

    # ------------------------------------------------------------ whose
    def owns(self, owner: str | None, path: str | os.PathLike) -> bool:
        """Whether `path` is a result in `owner`'s own folder."""
        if not owner:
            return False
        real = Path(path).resolve()
        return real.suffix == ".png" and (self.folder / owner_folder(owner)).resolve() in real.parents

    def _own(self, owner: str | None, paths, doing: str) -> list[Path]:
        paths = [Path(p) for p in paths]
        if not paths:
            raise HistoryError(f"nothing to {doing}: pick a result first")
        theirs = sum(not self.owns(owner, p) for p in paths)
        if theirs:
            raise HistoryError(f"you can {doing} only your own results, and {theirs} of these "
                               f"{'is' if theirs == 1 else 'are'} not yours")
        return paths

    # ------------------------------------------------------------ favourites
    def favourites(self, owner: str | None) -> set[Path]:
        """The results `owner` starred (those still there or not)."""
        if not owner:
            return set()
        folder = self.folder / owner_folder(owner)
        try:
            names = json.loads((folder / FAVOURITES).read_text("utf-8")).get("favourites", [])
        except (OSError, ValueError, AttributeError):      # none yet (or not ours to read): no favourites
            return set()
        return {folder / n for n in names if isinstance(n, str) and ".." not in Path(n).parts}

    def set_favourite(self, owner: str | None, path: str | os.PathLike, on: bool) -> None:
        """Star (`on`) or unstar one of `owner`'s own results."""
        (path,) = self._own(owner, [path], "star")
        folder = self.folder / owner_folder(owner)
        with self._lock:
            names = {str(p.relative_to(folder).as_posix()) for p in self.favourites(owner)}
            name = Path(path).resolve().relative_to(folder.resolve()).as_posix()
            names = names | {name} if on else names - {name}
            _write_atomic(folder / FAVOURITES, json.dumps({"favourites": sorted(names)}, indent=1))

    # ------------------------------------------------------------ deleting, zipping
    def delete(self, owner: str | None, paths) -> int:
        """Delete results of `owner`'s own (all or none: another's refuses all); how many were there."""
        paths = self._own(owner, paths, "delete")
        gone = 0
        for path in paths:
            try:
                path.unlink()
                gone += 1
            except FileNotFoundError:
                pass
            self._seen.pop(str(path), None)
        starred = self.favourites(owner)
        if starred & set(paths):
            folder = self.folder / owner_folder(owner)
            with self._lock:
                names = sorted(p.relative_to(folder).as_posix() for p in self.favourites(owner) - set(paths))
                _write_atomic(folder / FAVOURITES, json.dumps({"favourites": names}, indent=1))
        return gone

    def zip(self, owner: str | None, everything: bool, paths, dest: str | os.PathLike | None = None) -> Path:
        """A zip of results `owner` may see (theirs; everyone's with `everything`), bytes as saved."""
        paths = [Path(p) for p in paths]
        if not paths:
            raise HistoryError("nothing to download: no results on this page")
        root = self.folder.resolve()
        theirs = [p for p in paths if not (self.owns(owner, p) or everything and root in p.resolve().parents)]
        if theirs or not owner and not everything:
            raise HistoryError(f"you can download only your own results, and {len(theirs) or len(paths)} "
                               "of these are not yours")
        out = Path(dest) if dest else self._zip_folder()
        target = out / f"results-{time.strftime('%Y%m%d-%H%M%S')}-{os.urandom(3).hex()}.zip"
        names = Counter(p.name for p in paths)
        with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED, strict_timestamps=False) as z:   # (PNGs: compressed)
            for n, path in enumerate(paths):
                z.write(path, path.name if names[path.name] == 1 else f"{n}-{path.name}")
        return target

    def _zip_folder(self) -> Path:
        if self._zips is None:
            self._zips = Path(tempfile.mkdtemp(prefix="ldm-history-"))
        for old in self._zips.glob("*.zip"):
            if time.time() - old.stat().st_mtime > ZIP_AGE:
                old.unlink(missing_ok=True)
        return self._zips


def _write_atomic(path: Path, text: str) -> None:
    """`text` into `path` whole or not at all (a temporary file beside it, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
