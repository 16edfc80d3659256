"""The History tab's parts and what they do to results: select one, star it, delete (after a
confirmation), zip for download. Every action takes its files from this session's listing on the
server (never from the browser), and `ldm_core.history` refuses what is not the visitor's."""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gradio as gr

from ldm_core.history import Entry, HistoryError, Query
from ldm_core.service import Service
from ldm_core.tasks import TASKS
from server.owners import owner_of

SESSIONS = 1000      # sessions whose query and page are remembered (for Refresh and the tab's select)
LABEL = 90           # characters of a caption in the page's list (the summary has it whole)
NO_SELECTION = "Click a result to see its parameters."


@dataclass(frozen=True)
class View:
    query: Query = Query()
    number: int = 1


class Views:
    """The query and page each session looks at: Refresh and the tab's select take no inputs."""

    def __init__(self, size: int = SESSIONS):
        self._views: OrderedDict = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key) -> View:
        with self._lock:
            return self._views.get(key, View())

    def put(self, key, view: View) -> None:
        with self._lock:
            self._views[key] = view
            self._views.move_to_end(key)
            while len(self._views) > self._size:
                self._views.popitem(last=False)


def session(request: gr.Request):
    return owner_of(request).key, getattr(request, "session_hash", None)


def title(task: str) -> str:
    return TASKS[task].title if task in TASKS else task


def _md(text: str) -> str:
    """`text` shown as itself in Markdown."""
    return "".join("\\" + c if c in "\\`*_[]<>#|" else c for c in text)


@dataclass
class Parts:
    search: gr.Textbox
    task: gr.Dropdown
    model: gr.Dropdown
    favourites: gr.Checkbox
    refresh: gr.Button
    gallery: gr.Gallery
    previous: gr.Button
    page: gr.Markdown
    next: gr.Button
    marked: gr.CheckboxGroup
    summary: gr.Markdown
    star: gr.Button
    delete: gr.Button
    zip: gr.Button
    confirm: gr.Column
    confirm_text: gr.Markdown
    really: gr.Button
    cancel: gr.Button
    download: gr.DownloadButton
    reuse: gr.Button
    send: dict
    raw: gr.Code
    entries: gr.State
    params: gr.State
    path: gr.State
    pending: gr.State             # the files a confirmation would delete

    @property
    def query(self) -> list:
        return [self.search, self.task, self.model, self.favourites]

    @property
    def listing(self) -> list:
        """What a new listing sets: the page and the filters' choices, and nothing selected (`cleared`)."""
        return [self.gallery, self.entries, self.page, self.task, self.model, self.marked, self.previous, self.next,
                self.summary, self.raw, self.params, self.path, self.star, self.download, self.confirm, self.pending]


def cleared() -> list:
    """The values of `Parts.listing`'s last eight: no result selected, no zip, no deletion asked."""
    return [NO_SELECTION, "", None, None, gr.Button("☆ Favourite", interactive=False),
            gr.DownloadButton(visible=False, value=None), gr.Column(visible=False), []]


def mark(i: int, params: dict, starred: bool) -> tuple[str, int]:
    """Result `i` of the page in its list: its number, caption (cut at LABEL) and star."""
    caption = Entry(Path(), params, 0).caption
    caption = caption if len(caption) <= LABEL else caption[:LABEL - 1] + "…"
    return f"{i + 1}. {caption}{' ★' if starred else ''}", i


def _summary(p: dict, starred: bool, own: bool) -> str:
    head = (f"**{_md(title(str(p.get('task'))))}** · `{p.get('model')}` · seed {p.get('seed')} · "
            f"{p.get('size')}{' · ★ favourite' if starred else ''}")
    whose = "" if own else "\n\n*Another visitor's result: you may look, not star or delete.*"
    what = Entry(Path(), p, 0).what           # the prompt whole, else the layout's box labels
    return head + (f"\n\n{_md(str(what))}" if what else "") + whose


def _picked(marked, listed, path) -> list[str]:
    """The ticked results of this page, else the clicked one (none: nothing)."""
    if marked:
        if any(not isinstance(i, int) or not 0 <= i < len(listed) for i in marked):
            raise gr.Error("the ticked results are not on this page any more: refresh and tick them again")
        return [listed[i][0] for i in marked]
    return [path] if path else []


def wire_actions(parts: Parts, studio: Service, listing: Callable, views: Views) -> None:
    results = studio.results
    quiet = dict(api_visibility="private")

    def star_button(request: gr.Request, path) -> gr.Button:
        owner = owner_of(request)
        starred = path is not None and results.owns(owner.key, path) and \
            str(path) in {str(p) for p in results.favourites(owner.key)}
        return gr.Button("★ Unfavourite" if starred else "☆ Favourite",
                         interactive=bool(path) and results.owns(owner.key, path))

    def select(listed, evt: gr.SelectData, request: gr.Request):
        if evt.index is None or evt.index >= len(listed):
            return gr.skip(), None, None, None, gr.skip()
        file, p = listed[evt.index]
        owner = owner_of(request)
        starred = str(file) in {str(f) for f in results.favourites(owner.key)}
        return (_summary(p, starred, results.owns(owner.key, file)), json.dumps(p, indent=1), p, file,
                star_button(request, file))

    def star(path, listed, marked, request: gr.Request):
        """Star or unstar the selected result; the page stays as it is (its list shows the star)."""
        owner = owner_of(request)
        if not path:
            raise gr.Error("click a result first, then star it")
        on = str(path) not in {str(f) for f in results.favourites(owner.key)}
        try:
            results.set_favourite(owner.key, path, on)
        except HistoryError as e:
            raise gr.Error(str(e)) from None
        starred = {str(f) for f in results.favourites(owner.key)}
        marks = [mark(i, p, str(f) in starred) for i, (f, p) in enumerate(listed)]
        return (gr.CheckboxGroup(choices=marks, value=marked), star_button(request, path),
                _summary(dict(listed).get(path) or {}, on, True))

    parts.gallery.select(select, parts.entries, [parts.summary, parts.raw, parts.params, parts.path, parts.star],
                         **quiet)
    parts.star.click(star, [parts.path, parts.entries, parts.marked], [parts.marked, parts.star, parts.summary],
                     **quiet)
    _wire_delete(parts, studio, listing, views)
    _wire_zip(parts, studio)


def _wire_delete(parts: Parts, studio: Service, listing: Callable, views: Views) -> None:
    results = studio.results
    quiet = dict(api_visibility="private")

    def ask(marked, listed, path, request: gr.Request):
        files = _picked(marked, listed, path)
        if not files:
            raise gr.Error("click a result (or tick several on this page) first, then delete")
        owner = owner_of(request)
        theirs = sum(not results.owns(owner.key, f) for f in files)
        if theirs:
            raise gr.Error(f"you can delete only your own results, and {theirs} of these are another visitor's")
        what = "this result" if len(files) == 1 else f"these {len(files)} results"
        return files, gr.Column(visible=True), f"**Really delete {what}?** This cannot be undone."

    def really(pending, request: gr.Request):
        try:
            gone = results.delete(owner_of(request).key, pending)
        except HistoryError as e:
            raise gr.Error(str(e)) from None
        values = listing(request, views.get(session(request)))
        values[parts.listing.index(parts.summary)] = f"Deleted {gone} result{'s' if gone != 1 else ''}."
        return values

    parts.delete.click(ask, [parts.marked, parts.entries, parts.path],
                       [parts.pending, parts.confirm, parts.confirm_text], **quiet)
    parts.really.click(really, parts.pending, parts.listing, **quiet)
    parts.cancel.click(lambda: ([], gr.Column(visible=False)), None, [parts.pending, parts.confirm], **quiet)


def _wire_zip(parts: Parts, studio: Service) -> None:
    def zipped(marked, listed, request: gr.Request):
        files = _picked(marked, listed, None) or [f for f, _ in listed]
        owner = owner_of(request)
        try:
            made = studio.results.zip(owner.key, owner.sees_all, files)
        except HistoryError as e:
            raise gr.Error(str(e)) from None
        size = made.stat().st_size
        size = f"{size / 1e6:.1f} MB" if size >= 1e5 else f"{max(1, round(size / 1e3))} kB"
        which = "ticked" if marked else "on this page"
        return gr.DownloadButton(f"⬇ Download {len(files)} results {which} ({size} zip)", value=str(made),
                                 visible=True)

    parts.zip.click(zipped, [parts.marked, parts.entries], parts.download, api_visibility="private")


