"""History tab: every result the studio has made (its output folder), newest first, with its
parameters; "Reuse these settings" fills its tab in, "Send to …" passes the image on."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import gradio as gr

from ldm_core.service import Service
from ldm_core.tasks import TASKS
from server.owners import owner_of

from .common import standalone

SHOWN = 120          # results in the gallery


@dataclass
class HistoryTab:
    gallery: gr.Gallery
    params: gr.State              # the selected result's parameters (what "reuse" sends)
    path: gr.State                # the selected result's file (what "send to" sends)
    reuse: gr.Button
    send: dict[str, gr.Button]    # task -> "send to" button (every task that takes an image)
    refresh: gr.Button
    entries: gr.State             # [(file, parameters)] as the gallery shows them
    load: Callable                # () -> (gallery value, entries): the newest results


def build(studio: Service) -> HistoryTab:
    with gr.Row():
        with gr.Column(scale=3):
            refresh = gr.Button("Refresh", size="sm", elem_id="history-refresh")
            gallery = gr.Gallery(label="Results, newest first", columns=6, height="auto", object_fit="contain",
                                 interactive=False, elem_id="history-gallery")
        with gr.Column(scale=2):
            summary = gr.Markdown("Click a result to see its parameters.", elem_id="history-summary")
            with gr.Row():
                reuse = gr.Button("Reuse these settings", variant="primary", elem_id="history-reuse")
            with gr.Row():
                send = {t.name: gr.Button(f"Send image to {t.title.lower()}", size="sm",
                                          elem_id=f"history-send-{t.name}")
                        for t in map(TASKS.get, studio.tasks) if t.takes_image}
            raw = gr.Code(label="Parameters", language="json", elem_id="history-params")
    entries = gr.State([])
    params, path = gr.State(None), gr.State(None)

    def load(request: gr.Request):
        """The newest results of whoever asks (every result for the operator: server/owners.py)."""
        owner = owner_of(request)
        found = studio.history(SHOWN, owner.key, owner.sees_all)
        return [(str(e.path), e.caption) for e in found], [(str(e.path), e.params) for e in found]

    def select(listed, evt: gr.SelectData):
        if evt.index is None or evt.index >= len(listed):
            return gr.skip(), None, None, None
        file, p = listed[evt.index]
        return f"**{p.get('task')}** · `{p.get('model')}` · seed {p.get('seed')} · {p.get('size')}", \
            json.dumps(p, indent=1), p, file

    refresh.click(load, None, [gallery, entries], api_visibility="private")
    gallery.select(select, entries, [summary, raw, params, path], api_visibility="private")
    return HistoryTab(gallery, params, path, reuse, send, refresh, entries, load)


if __name__ == "__main__":
    standalone(build, "History")
