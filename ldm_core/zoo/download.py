"""Fetching a zoo model's published file once, and converting it.

`download(name)`: says the size first, downloads into `zoo_dir()/downloads/` (resuming a `.part`
left by an interrupted run), hashes it, takes the checkpoint out of the zip (that one member
only, written under a name of ours: no path from the archive is used), converts it with the
vendored config, and removes the download only once the conversion is written. A model already
converted is returned without touching the network. `$LDM_ZOO_URL` may name a mirror, or a
`file://` folder holding the same file names (offline).
"""
from __future__ import annotations

import os
import shutil
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from . import ZOO, converted, zoo_dir
from .convert import convert_checkpoint, sha256_file

CHUNK = 1 << 20


def _local(url: str) -> Path | None:
    u = urlparse(url)
    return Path(unquote(u.path)) if u.scheme == "file" else None


def remote_size(url: str) -> int | None:
    """Content-Length of a HEAD request, or a file:// file's size; None when not said."""
    if (path := _local(url)) is not None:
        return path.stat().st_size if path.is_file() else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=30) as r:
            n = r.headers.get("Content-Length")
            return int(n) if n else None
    except (OSError, ValueError):
        return None


def _gb(n: int | None) -> str:
    return "size unknown" if n is None else f"{n / 1e9:.2f} GB"


def fetch(url: str, dest: Path, size: int | None, progress=print) -> None:
    """`url` -> `dest`, resuming from `dest.part` where a server honours Range (a file:// seeks)."""
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have == size:          # all there already (a Range past the end would fail)
        part.rename(dest)
        return
    if (path := _local(url)) is not None:
        if not path.is_file():
            raise FileNotFoundError(f"{url}: no such file in the mirror")
        src = open(path, "rb")
        src.seek(have)
    else:
        req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        src = urllib.request.urlopen(req, timeout=60)
        if have and getattr(src, "status", 200) != 206:   # the server sent it all again: start over
            have = 0
    if have:
        progress(f"resuming at {_gb(have)}")
    with src, open(part, "ab" if have else "wb") as out:
        done, shown = have, have
        while chunk := src.read(CHUNK):
            out.write(chunk)
            done += len(chunk)
            if done - shown >= 64 * CHUNK:
                shown = done
                progress(f"{_gb(done)}" + (f" of {_gb(size)} ({100 * done / size:.0f}%)" if size else ""))
    if size is not None and part.stat().st_size != size:
        raise OSError(f"{dest.name}: got {part.stat().st_size} bytes, expected {size} (run again to resume)")
    part.rename(dest)


def extract_member(archive: Path, member: str, dest: Path) -> Path:
    """The one member `member` of a zip, streamed to `dest` (our path, not the archive's)."""
    with zipfile.ZipFile(archive) as zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise ValueError(f"{archive.name} has no {member}; it holds {zf.namelist()[:5]}") from None
        if info.is_dir():
            raise ValueError(f"{archive.name}: {member} is a folder")
        with zf.open(info) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
    return dest


def download(name: str, *, progress=print, ema: bool | None = None) -> Path:
    """The converted zoo model `name`, downloading and converting it the first time."""
    if name not in ZOO:
        raise KeyError(f"{name!r} is not in the zoo ({', '.join(ZOO)})")
    if folder := converted(name):
        return folder
    m = ZOO[name]
    work = zoo_dir() / "downloads"
    work.mkdir(parents=True, exist_ok=True)
    url, suffix = m.url, Path(m.file).suffix
    archive = work / f"{name}{suffix}"
    if not archive.exists():
        size = remote_size(url) or m.size
        progress(f"{name}: downloading {url} ({_gb(size)}) into {work}")
        fetch(url, archive, size, progress)
    progress(f"{name}: checking {archive.name}")
    digest = sha256_file(archive)
    ckpt = archive
    if suffix == ".zip" and m.member:      # member "": the .zip is the checkpoint itself (inpainting_big)
        ckpt = extract_member(archive, m.member, work / f"{name}.ckpt")
    progress(f"{name}: converting")
    try:
        out = convert_checkpoint(ckpt, m.config, name, ema=ema,
                                 extra={"url": url, "download": archive.name, "download_sha256": digest})
    finally:
        if ckpt != archive:
            ckpt.unlink(missing_ok=True)
    os.remove(archive)
    progress(f"{name}: ready in {out}")
    return out
