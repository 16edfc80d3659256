"""History as an image browser (issue 29, feature 5): search, filters, pages, favourites, deleting and
zips over `ldm_core.history.History`, and that each owner sees, stars, deletes and downloads only
their own results (also through the tab's own handlers, with another owner's file planted in a
session's listing)."""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image, PngImagePlugin

from ldm_core import history as H
from ldm_core.history import History, HistoryError, Query, owner_folder, png_parameters
from ldm_core.provenance import read_parameters, save_png

ALICE, BOB = "visitor:" + "a" * 32, "visitor:" + "b" * 32


def make(root: Path, owner: str | None, n: int, start: float = 1_000_000, **params) -> list[Path]:
    """`n` results of `owner` (None: the output folder itself), the i-th `start + i` seconds old."""
    folder = root / owner_folder(owner) if owner else root
    made = []
    for i in range(n):
        p = {"task": "text2img", "model": "tiny", "seed": i, "size": "8x8", "prompt": f"a red circle {i}", **params}
        path = save_png(Image.new("RGB", (8, 8), (i % 255, 0, 0)), p, folder, watermark=False)
        os.utime(path, (start + i, start + i))
        made.append(path)
    return made


@pytest.fixture
def book(tmp_path) -> History:
    return History(tmp_path)


def test_pages_are_newest_first_with_their_count(book, tmp_path):
    made = make(tmp_path, ALICE, 30)
    first = book.page(ALICE, number=1, per_page=12)
    assert (first.number, first.pages, first.total) == (1, 3, 30)
    assert [e.path for e in first.entries] == made[::-1][:12]
    last = book.page(ALICE, number=3, per_page=12)
    assert [e.path for e in last.entries] == made[::-1][24:]
    assert book.page(ALICE, number=99, per_page=12).number == 3 and book.page(ALICE, number=0).number == 1


def test_search_is_a_substring_of_the_prompt_or_a_box_label_in_any_case(book, tmp_path):
    make(tmp_path, ALICE, 3, prompt="A Watercolour FOX")
    make(tmp_path, ALICE, 2, task="layout2img", prompt="", boxes=[{"label": "Blue Square", "box": [0, 0, 1, 1]}])
    make(tmp_path, ALICE, 4)
    assert book.page(ALICE, query=Query("watercolour fox")).total == 3
    found = book.page(ALICE, query=Query("blue sq"))
    assert found.total == 2 and all(e.params["task"] == "layout2img" for e in found.entries)
    assert "Blue Square" in found.entries[0].caption           # a layout's caption names its boxes
    assert book.page(ALICE, query=Query("no such thing")).total == 0
    assert book.page(ALICE, query=Query("")).total == 9


def test_filters_by_task_and_model_and_offers_what_there_is(book, tmp_path):
    make(tmp_path, ALICE, 2, task="img2img", model="m1")
    make(tmp_path, ALICE, 3, model="m2")
    page = book.page(ALICE)
    assert page.tasks == ["img2img", "text2img"] and page.models == ["m1", "m2"]
    assert book.page(ALICE, query=Query(task="img2img")).total == 2
    assert book.page(ALICE, query=Query(model="m2")).total == 3
    assert book.page(ALICE, query=Query(task="img2img", model="m2")).total == 0
    assert book.page(ALICE, query=Query(task="img2img")).tasks == ["img2img", "text2img"]   # choices stay


def test_favourites_are_a_json_file_in_the_owners_folder(book, tmp_path):
    made = make(tmp_path, ALICE, 5)
    book.set_favourite(ALICE, made[1], True)
    book.set_favourite(ALICE, made[3], True)
    book.set_favourite(ALICE, made[3], False)
    book.set_favourite(ALICE, made[4], True)
    folder = tmp_path / owner_folder(ALICE)
    stored = json.loads((folder / "favourites.json").read_text())
    assert stored == {"favourites": sorted([made[1].name, made[4].name])}
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []     # no temporary file left
    starred = book.page(ALICE, query=Query(favourites=True))
    assert [e.path for e in starred.entries] == [made[4], made[1]] and starred.favourites == {made[4], made[1]}
    assert all(read_parameters(p)["seed"] == i for i, p in enumerate(made))      # the PNGs are untouched
    assert book.page(BOB, query=Query(favourites=True)).total == 0


def test_delete_removes_own_results_and_their_stars(book, tmp_path):
    made = make(tmp_path, ALICE, 4)
    book.set_favourite(ALICE, made[0], True)
    assert book.delete(ALICE, [made[0], made[2]]) == 2
    assert not made[0].exists() and not made[2].exists() and made[1].exists()
    assert book.page(ALICE).total == 2 and book.favourites(ALICE) == set()
    with pytest.raises(HistoryError, match="pick a result first"):
        book.delete(ALICE, [])


def test_zip_holds_the_pngs_with_their_parameters(book, tmp_path):
    made = make(tmp_path, ALICE, 3, prompt="zipped ünïcode")
    out = tmp_path / "zips"
    out.mkdir()
    path = book.zip(ALICE, False, made, out)
    with zipfile.ZipFile(path) as z:
        assert sorted(z.namelist()) == sorted(p.name for p in made)
        for p in made:
            data = z.read(p.name)
            assert data == p.read_bytes()
            assert read_parameters(Image.open(io.BytesIO(data)))["prompt"] == "zipped ünïcode"


def test_no_owner_sees_stars_deletes_or_downloads_anothers_results(book, tmp_path):
    """The privacy rule for every feature: Bob cannot reach Alice's results in any way."""
    alice = make(tmp_path, ALICE, 3, prompt="alice secret")
    make(tmp_path, BOB, 1, prompt="bob's own")
    assert all("alice" not in e.caption for e in book.page(BOB).entries)
    assert book.page(BOB, query=Query("alice")).total == 0 and book.page(None, everything=False).total == 0
    assert all(e.path not in alice for e in book.entries(10, BOB))
    for act in (lambda: book.set_favourite(BOB, alice[0], True), lambda: book.delete(BOB, alice[:1]),
                lambda: book.zip(BOB, False, alice[:1], tmp_path)):
        with pytest.raises(HistoryError, match="only your own"):
            act()
    bobs = book.page(BOB).entries[0].path
    with pytest.raises(HistoryError, match="only your own"):            # one not his: none deleted
        book.delete(BOB, [bobs, alice[1]])
    assert bobs.exists() and alice[1].exists()
    sneaky = tmp_path / owner_folder(BOB) / ".." / owner_folder(ALICE) / alice[2].name
    for who in (BOB, None):
        with pytest.raises(HistoryError):
            book.delete(who, [sneaky])
    with pytest.raises(HistoryError):
        book.set_favourite(None, alice[0], True)
    assert all(p.exists() for p in alice) and not (tmp_path / owner_folder(BOB) / "favourites.json").exists()
    assert book.favourites(BOB) == set()
    # the operator (or --shared-history) sees and downloads everyone's, but stars and deletes only their own
    assert book.page(BOB, everything=True).total == 4
    assert book.zip(BOB, True, alice[:1], tmp_path).exists()
    with pytest.raises(HistoryError, match="only your own"):
        book.delete(BOB, alice[:1])


def test_a_favourites_file_cannot_name_files_outside_the_owners_folder(book, tmp_path):
    alice = make(tmp_path, ALICE, 1)
    folder = tmp_path / owner_folder(BOB)
    folder.mkdir()
    (folder / "favourites.json").write_text(json.dumps({"favourites": [f"../{owner_folder(ALICE)}/{alice[0].name}"]}))
    assert book.favourites(BOB) == set()


def test_a_page_turn_opens_no_png_and_the_first_listing_reads_each_once(book, tmp_path, monkeypatch):
    make(tmp_path, ALICE, 40)
    opened = []
    real = H.png_parameters
    monkeypatch.setattr(H, "png_parameters", lambda p: opened.append(p) or real(p))
    book.page(ALICE, query=Query("circle"))
    assert len(opened) == 40
    book.page(ALICE, number=2, per_page=10)
    book.page(ALICE, query=Query("circle 3"))
    assert len(opened) == 40
    new = make(tmp_path, ALICE, 1, start=2_000_000)[0]
    assert book.page(ALICE).entries[0].path == new and [Path(p) for p in opened[40:]] == [new]


def chunks(data: bytes) -> list[bytes]:
    out, at = [], 8
    while at < len(data):
        length = int.from_bytes(data[at:at + 4], "big")
        out.append(data[at:at + 12 + length])
        at += 12 + length
    return out


def test_parameters_are_read_from_the_chunks_before_the_image_data(tmp_path):
    made = make(tmp_path, None, 1, prompt="ünïcode")[0]
    assert png_parameters(made) == read_parameters(made)
    zipped = tmp_path / "zipped.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("ldm_studio", json.dumps({"task": "text2img", "seed": 1}), zip=True)
    Image.new("RGB", (8, 8)).save(zipped, pnginfo=info)
    assert b"zTXt" in zipped.read_bytes() and png_parameters(zipped) == {"task": "text2img", "seed": 1}
    late = tmp_path / "late.png"                       # the text after the image data: read the slow way
    parts = chunks(made.read_bytes())
    text = [c for c in parts if c[4:8] == b"iTXt"]
    late.write_bytes(made.read_bytes()[:8] + b"".join([c for c in parts if c not in text][:-1] + text + parts[-1:]))
    assert chunks(late.read_bytes())[-2][4:8] == b"iTXt" and png_parameters(late) == read_parameters(made)
    (tmp_path / "not.png").write_bytes(b"not a png")
    assert png_parameters(tmp_path / "not.png") is None
    assert {e.path.name for e in History(tmp_path).entries(10, everything=True)} == {made.name, "zipped.png",
                                                                                     "late.png"}


# ------------------------------------------------------------ through the tab's own handlers

def request(owner_id: str | None, session: str = "s1"):
    """A gr.Request as the tab's handlers see it: a visitor's cookie, from another machine."""
    headers = [(b"host", b"studio.example")] + ([(b"cookie", f"ldm_visitor={owner_id}".encode())] if owner_id else [])
    return SimpleNamespace(request=SimpleNamespace(scope={"headers": headers, "client": ("10.0.0.9", 1)}),
                           username=None, session_hash=session)


def handler(demo, name: str):
    return next(f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == name)


def test_the_tabs_handlers_refuse_anothers_file_planted_in_a_listing(tmp_path):
    """Even with Alice's file in Bob's session state (as a forged listing), the tab's star, delete
    and zip refuse; Bob's own listing never holds it."""
    import gradio as gr
    from tabs import history as tab

    alice = make(tmp_path, ALICE, 2, prompt="alice secret")
    make(tmp_path, BOB, 1, prompt="bob's")
    studio = SimpleNamespace(results=History(tmp_path), tasks=())
    with gr.Blocks() as demo:
        built = tab.build(studio)
    bob = request("b" * 32)
    listed = built.load(bob)
    assert "alice" not in repr(listed) and "bob's" in json.dumps(listed[1])      # the page's (file, parameters)
    forged = [(str(alice[0]), {"prompt": "alice secret"})]
    for call in (lambda: handler(demo, "star")(str(alice[0]), forged, [], bob),
                 lambda: handler(demo, "ask")([0], forged, None, bob),
                 lambda: handler(demo, "really")([str(alice[0])], bob),
                 lambda: handler(demo, "zipped")([0], forged, bob),
                 lambda: handler(demo, "zipped")([], forged, request(None))):
        with pytest.raises(gr.Error, match="only your own"):
            call()
    assert all(p.exists() for p in alice) and studio.results.favourites(BOB) == set()
