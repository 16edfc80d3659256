"""History tab: an image browser over every result its visitor made (their output folder), newest
first, a page at a time: search the prompts and box labels, filter by task, model and favourites,
star, delete (after a confirmation), download as a zip; "Reuse these settings" fills its tab in,
"Send to …" passes the image on. Every action resolves results from this session's own listing on
the server, and `ldm_core.history` refuses what is not the visitor's (server/owners.py)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import gradio as gr

from ldm_core.history import Page, Query
from ldm_core.service import Service
from ldm_core.tasks import TASKS
from server.owners import owner_of

from .common import standalone
from .history_actions import NO_SELECTION, Parts, View, Views, cleared, mark, session, title, wire_actions

EVERY = ""           # a filter's value for "every task / model"
# The captions stay off the thumbnails (the summary and the page's list show them whole) and wrap
# under the large preview; the page's list in two even columns.
CSS = ("#history-gallery .thumbnail-item .caption-label { display: none !important; }\n"
       "#history-gallery .caption { white-space: normal !important; overflow-wrap: anywhere; }\n"
       "#history-marked .wrap { display: grid !important; grid-template-columns: repeat(2, minmax(0, 1fr)); }\n"
       "#history-marked .wrap label { margin: 0; }\n")


@dataclass
class HistoryTab:
    gallery: gr.Gallery
    params: gr.State              # the selected result's parameters (what "reuse" sends)
    path: gr.State                # the selected result's file (what "send to" sends)
    reuse: gr.Button
    send: dict[str, gr.Button]    # task -> "send to" button (every task that takes an image)
    refresh: gr.Button
    entries: gr.State             # [(file, parameters)] as the gallery shows them (this page)
    load: Callable                # () -> the values of `shown`: this session's page, read again
    shown: list                   # what `load` fills in (the gallery, `entries`, the page, the filters)


def _page_line(page: Page, query: Query) -> str:
    if not page.total:
        return "No results match." if query != Query() else "No results yet."
    matching = " matching" if query != Query() else ""
    return f"Page **{page.number}** of **{page.pages}** · {page.total} result{'s' * (page.total != 1)}{matching}"


def _listed(page: Page, query: Query) -> list:
    """The values of the listing's outputs (see `Parts.listing`) for `page`: a new page, nothing selected."""
    marks = [mark(i, e.params, e.path in page.favourites) for i, e in enumerate(page.entries)]
    return [gr.Gallery([(str(e.path), e.caption) for e in page.entries], selected_index=None),
            [(str(e.path), e.params) for e in page.entries], _page_line(page, query),
            gr.Dropdown(choices=[("Every task", EVERY)] + [(title(t), t) for t in page.tasks], value=query.task),
            gr.Dropdown(choices=[("Every model", EVERY)] + [(m, m) for m in page.models], value=query.model),
            gr.CheckboxGroup(choices=marks, value=[]),
            gr.Button(interactive=page.number > 1), gr.Button(interactive=page.number < page.pages), *cleared()]


def _layout(studio: Service) -> Parts:
    gr.HTML("", head=f"<style>{CSS}</style>", js_on_load=None, padding=False, container=False)
    with gr.Row():
        with gr.Column(scale=3):
            with gr.Row(equal_height=True):
                search = gr.Textbox(placeholder="Search prompts, box labels", show_label=False, scale=4,
                                    elem_id="history-search")
                task = gr.Dropdown([("Every task", EVERY)], value=EVERY, show_label=False, scale=2,
                                   elem_id="history-task")
                model = gr.Dropdown([("Every model", EVERY)], value=EVERY, show_label=False, scale=2,
                                    elem_id="history-model")
                favourites = gr.Checkbox(label="★ only", scale=1, min_width=110, elem_id="history-favourites-only")
                refresh = gr.Button("Refresh", size="sm", scale=1, min_width=80, elem_id="history-refresh")
            gallery = gr.Gallery(label="Results, newest first", columns=6, fit_columns=False, height="auto",
                                 object_fit="contain", interactive=False, elem_id="history-gallery")
            with gr.Row(equal_height=True):
                previous = gr.Button("◀ Previous", size="sm", interactive=False, elem_id="history-previous")
                page = gr.Markdown("", elem_id="history-page")
                nxt = gr.Button("Next ▶", size="sm", interactive=False, elem_id="history-next")
            marked = gr.CheckboxGroup([], label="On this page: tick results to delete or download several",
                                      elem_id="history-marked")
        with gr.Column(scale=2):
            summary = gr.Markdown(NO_SELECTION, elem_id="history-summary")
            with gr.Row():
                star = gr.Button("☆ Favourite", size="sm", interactive=False, min_width=90, elem_id="history-star")
                delete = gr.Button("Delete…", size="sm", variant="stop", min_width=90, elem_id="history-delete")
                zipped = gr.Button("Zip for download", size="sm", min_width=90, elem_id="history-zip")
            with gr.Column(visible=False, variant="panel", elem_id="history-confirm") as confirm:
                confirm_text = gr.Markdown("", elem_id="history-confirm-text")
                with gr.Row():
                    really = gr.Button("Delete", size="sm", variant="stop", elem_id="history-really-delete")
                    cancel = gr.Button("Cancel", size="sm", elem_id="history-cancel")
            download = gr.DownloadButton("Download zip", visible=False, size="sm", elem_id="history-download")
            with gr.Row():
                reuse = gr.Button("Reuse these settings", variant="primary", elem_id="history-reuse")
            with gr.Row():
                send = {t.name: gr.Button(f"Send image to {t.title.lower()}", size="sm",
                                          elem_id=f"history-send-{t.name}")
                        for t in map(TASKS.get, studio.tasks) if t.takes_image}
            raw = gr.Code(label="Parameters", language="json", elem_id="history-params")
    return Parts(search, task, model, favourites, refresh, gallery, previous, page, nxt, marked, summary, star,
                 delete, zipped, confirm, confirm_text, really, cancel, download, reuse, send, raw,
                 gr.State([]), gr.State(None), gr.State(None), gr.State([]))


def build(studio: Service) -> HistoryTab:
    parts = _layout(studio)
    views, results = Views(), studio.results

    def listing(request: gr.Request, view: View) -> list:
        owner = owner_of(request)
        page = results.page(owner.key, owner.sees_all, view.query, view.number)
        views.put(session(request), replace(view, number=page.number))
        return _listed(page, view.query)

    def load(request: gr.Request):
        """This session's page read again (every result for the operator: server/owners.py)."""
        view = views.get(session(request))
        return *listing(request, view), view.query.text, view.query.favourites

    def show(text, task, model, favourites, request: gr.Request):
        return listing(request, View(Query(text or "", task or EVERY, model or EVERY, bool(favourites))))

    def turn(step: int):
        def turned(text, task, model, favourites, request: gr.Request):
            query = Query(text or "", task or EVERY, model or EVERY, bool(favourites))
            view = views.get(session(request))
            return listing(request, View(query, view.number + step if view.query == query else 1))
        return turned

    shown = [*parts.listing, parts.search, parts.favourites]
    parts.refresh.click(load, None, shown, api_visibility="private")
    quiet = dict(api_visibility="private", show_progress="hidden")
    parts.search.change(show, parts.query, parts.listing, trigger_mode="always_last", **quiet)
    for control in (parts.task, parts.model, parts.favourites):
        control.input(show, parts.query, parts.listing, **quiet)
    parts.previous.click(turn(-1), parts.query, parts.listing, **quiet)
    parts.next.click(turn(+1), parts.query, parts.listing, **quiet)
    wire_actions(parts, studio, listing, views)
    return HistoryTab(parts.gallery, parts.params, parts.path, parts.reuse, parts.send, parts.refresh,
                      parts.entries, load, shown)


if __name__ == "__main__":
    standalone(build, "History")
