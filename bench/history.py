"""How fast History lists thousands of results (issue #29, feature 5): a benchmark, not a timed test.

    python bench/history.py               # 3000 results, 7 runs per figure
    python bench/history.py --n 10000 --runs 5

Makes one real result PNG (a 256x256 image saved by the studio's `save_png`: watermark, parameters)
and copies it N times into one owner's folder, each copy with its own prompt, task, model and seed in
its `ldm_studio` text chunk (the image data byte for byte the same) and its own mtime. Then times,
on ldm_core.history.History:

- first listing    a fresh History (a server just started): page 1, every PNG's parameters read once (a
                   search and the filters' choices need them all); also with Pillow's reader
                   (`provenance.read_parameters`), and the old tab's listing (the newest 120, Pillow's reader);
- page turn        page 2, then the last page, with the parameters cached (stat of each file, no PNG opened);
- search / filter  a prompt substring, a task, favourites only (cached);
- after one new    one more result saved: the next listing reads only it.

Prints a markdown table (median of the runs, min-max); the files go to a temporary folder, removed after.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from PIL import Image  # noqa: E402

from ldm_core import history as H  # noqa: E402
from ldm_core.history import History, Query, owner_folder  # noqa: E402
from ldm_core.provenance import read_parameters, save_png  # noqa: E402

OWNER = "visitor:" + "c" * 32
WORDS = ["fox", "circle", "square", "harbour", "lantern", "orchard", "glacier", "violin"]
TASKS = ["text2img", "layout2img", "img2img", "inpaint"]


def itxt(key: str, text: str) -> bytes:
    body = key.encode() + b"\0\0\0\0\0" + text.encode("utf-8")      # uncompressed, no language
    return struct.pack(">I", len(body)) + b"iTXt" + body + struct.pack(">I", zlib.crc32(b"iTXt" + body))


def split_chunks(data: bytes) -> list[bytes]:
    out, at = [], 8
    while at < len(data):
        length = struct.unpack(">I", data[at:at + 4])[0]
        out.append(data[at:at + 12 + length])
        at += 12 + length
    return out


def make_results(folder: Path, n: int) -> Path:
    """One real result, then `n` copies with their own parameters and mtimes; returns the original."""
    img = Image.radial_gradient("L").convert("RGB")
    params = {"task": "text2img", "model": "tiny", "seed": 0, "size": "256x256", "prompt": "a red fox", "steps": 20}
    original = save_png(img, params, folder.parent)
    chunks = split_chunks(original.read_bytes())
    keep = [c for c in chunks if not (c[4:8] == b"iTXt" and c[8:18] == b"ldm_studio")]
    head, tail = b"\x89PNG\r\n\x1a\n" + keep[0], b"".join(keep[1:])   # IHDR, then the rest as saved
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for i in range(n):
        p = {**params, "seed": i, "task": TASKS[i % len(TASKS)], "model": f"model-{i % 3}",
             "prompt": f"a {WORDS[i % len(WORDS)]} number {i} in the {WORDS[(i * 7) % len(WORDS)]}"}
        path = folder / f"{p['task']}-{i}-{i:08x}.png"
        path.write_bytes(head + itxt("ldm_studio", json.dumps(p, sort_keys=True)) + tail)
        os.utime(path, (now - n + i, now - n + i))
    return original


def timed(fn, runs: int) -> dict:
    xs = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        xs.append(time.perf_counter() - t)
    return {"median": statistics.median(xs) * 1e3, "min": min(xs) * 1e3, "max": max(xs) * 1e3, "n": runs}


def first_listing(root: Path, reader=None, newest: int = 0) -> None:
    """Page 1 on a fresh History (nothing cached), reading parameters with `reader` when given;
    `newest`: only that many newest results, as the old tab listed them (`History.entries`)."""
    saved = H.png_parameters
    H.png_parameters = reader or saved
    try:
        book = History(root)
        book.entries(newest, OWNER) if newest else book.page(OWNER)
    finally:
        H.png_parameters = saved


def run(n: int, runs: int) -> list[tuple[str, dict]]:
    root = Path(tempfile.mkdtemp(prefix="ldm-bench-history-"))
    try:
        folder = root / owner_folder(OWNER)
        original = make_results(folder, n)
        assert read_parameters(next(folder.iterdir()))["model"].startswith("model-")     # real, readable copies
        rows = [("first listing (fresh server: page 1, every result read once)",
                 timed(lambda: first_listing(root), runs)),
                ("the same with Pillow's reader",
                 timed(lambda: first_listing(root, read_parameters), max(1, runs // 3))),
                ("before: the old tab's listing (newest 120, Pillow's reader)",
                 timed(lambda: first_listing(root, read_parameters, 120), runs))]
        book = History(root)
        book.page(OWNER)
        last = book.page(OWNER).pages
        for name in sorted(os.listdir(folder))[:40:4]:
            book.set_favourite(OWNER, folder / name, True)
        rows += [("page turn (page 2)", timed(lambda: book.page(OWNER, number=2), runs)),
                 (f"page turn (last page, {last})", timed(lambda: book.page(OWNER, number=last), runs)),
                 ("search 'harbour'", timed(lambda: book.page(OWNER, query=Query("harbour")), runs)),
                 ("filter task + model", timed(lambda: book.page(OWNER, query=Query(task="inpaint", model="model-1")),
                                               runs)),
                 ("favourites only", timed(lambda: book.page(OWNER, query=Query(favourites=True)), runs))]

        def one_new():
            shutil.copy(original, folder / f"new-{time.time_ns()}.png")
            book.page(OWNER)
        rows.append(("listing after one new result", timed(one_new, runs)))
        return rows
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=3000, help="results in the owner's folder")
    ap.add_argument("--runs", type=int, default=7, help="runs per figure (the median is shown)")
    args = ap.parse_args()
    rows = run(args.n, args.runs)
    print(f"\nHistory with {args.n} results, {H.PER_PAGE} a page ({os.cpu_count()} CPUs, Python "
          f"{sys.version.split()[0]})\n")
    print("| case | ms (median) | min-max | runs |\n|---|---:|---:|---:|")
    for name, s in rows:
        print(f"| {name} | {s['median']:.1f} | {s['min']:.1f}-{s['max']:.1f} | {s['n']} |")


if __name__ == "__main__":
    main()
