"""The block every task tab shares, written once: Generate and Stop, the live preview, the
results and their parameters; and the event that turns the tab's named inputs into a request,
runs it on the studio (`ldm_core.service.Service`) with progress and cancel, and shows it."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

import gradio as gr

from ldm_core.jobs import Done
from ldm_core.service import Service
from server.errors import user_error
from server.fair_use import abandonment, validator, with_signature
from server.owners import owner_of

GPU_CONCURRENCY_ID = "gpu"   # every event that runs a model shares this queue slot


def gpu(fn):
    """On Hugging Face ZeroGPU Spaces, ask for a GPU for the duration of a generation (`spaces.GPU`);
    elsewhere the function itself."""
    try:
        import spaces  # type: ignore  # optional: only installed on Hugging Face Spaces
    except ImportError:
        return fn
    return spaces.GPU(fn)


@dataclass
class Results:
    """Where a tab shows a run: its preview while it runs, then the images and their parameters."""
    preview: gr.Image
    gallery: gr.Gallery | gr.Image
    info: gr.Code
    single: bool = False          # one image (super-resolution), not a gallery

    @property
    def outputs(self) -> list:
        return [self.gallery, self.preview, self.info]


def buttons(prefix: str, label: str = "Generate") -> tuple[gr.Button, gr.Button]:
    """The Generate and Stop buttons of a tab."""
    with gr.Row():
        generate = gr.Button(label, variant="primary", elem_id=f"{prefix}-generate")
        stop = gr.Button("Stop", variant="stop", elem_id=f"{prefix}-stop")
    return generate, stop


def results(prefix: str, columns: int = 4, single: bool = False, preview_height: int = 160) -> Results:
    """The preview, the results and their parameters of a tab."""
    preview = gr.Image(label="Preview", height=preview_height, interactive=False, elem_id=f"{prefix}-preview")
    if single:   # one image, shown whole (a gallery cell would crop it)
        gallery = gr.Image(label="4× result", type="filepath", format="png", height=420, interactive=False,
                           elem_id=f"{prefix}-gallery")
    else:
        gallery = gr.Gallery(label="Images", columns=columns, height="auto", format="png", object_fit="contain",
                             interactive=False, elem_id=f"{prefix}-gallery")
    info = gr.Code(label="Parameters used", language="json", elem_id=f"{prefix}-info")
    return Results(preview, gallery, info, single)


def job_events(studio: Service, request, client: gr.Request | None, previews: bool = True):
    """Run `request` on the studio for the client's owner (`server/owners.py`); yield its Progress
    updates, then Done. Errors come as the user's message; closing this generator (Gradio does on
    Stop, or when the client leaves) cancels the run."""
    job = studio.start(request, previews=previews, abandoned=abandonment(client),
                       owner=owner_of(client).key)
    try:
        yield from job
    except gr.Error:
        raise
    except Exception as e:
        raise user_error(e) from None
    finally:
        job.cancel()


def progress_updates(studio: Service, request, progress: gr.Progress | None, client: gr.Request | None):
    """Run `request`; yield (results, preview, info) updates while it runs, then the results."""
    for ev in job_events(studio, request, client):
        if isinstance(ev, Done):
            yield [str(p) for p in ev.paths], None, json.dumps(ev.info, indent=1)
            return
        if progress is not None:
            progress((ev.step, ev.total), desc="denoising", unit="steps")
        # an update every UPDATE_SECONDS, even an empty one: Gradio can only stop a generator
        # between two of its updates, so this is what lets Stop act within a fraction of a second
        yield gr.skip(), (gr.skip() if ev.preview is None else ev.preview), gr.skip()


def stopped():
    """What Stop does besides cancelling: says so, and clears the last (noisy) preview."""
    gr.Info("Stopped: the generation was cancelled.")
    return None


def wire(studio: Service, button: gr.Button, stop: gr.Button, inputs: dict, make_request: Callable,
         shown: Results, check: Callable | None = None):
    """`button` runs `make_request({input name: value})` on the studio and shows it in `shown`;
    `stop` cancels it. `check({name: value})` may name a problem, refused before the job is queued
    (so is a client over its quota: `server.fair_use.reserve_per_client`). Returns the event, for
    other buttons to cancel."""
    names, components = list(inputs), list(inputs.values())

    def run(*values):
        client, progress = values[len(names)], values[len(names) + 1]
        try:
            request = make_request(dict(zip(names, values[:len(names)])))
        except Exception as e:
            raise user_error(e) from None
        for paths, preview, info in progress_updates(studio, request, progress, client):
            if shown.single and isinstance(paths, list):
                paths = paths[0]
            yield paths, preview, info

    event = button.click(gpu(with_signature(run, names, progress=True)), components, shown.outputs,
                         concurrency_id=GPU_CONCURRENCY_ID, api_visibility="private",
                         validator=validator(names, check))
    stop.click(stopped, None, shown.preview, cancels=[event], api_visibility="private")
    return event


def standalone(build: Callable, title: str) -> None:
    """Run one tab alone on the built-in models (`python -m tabs.<name>`)."""
    with gr.Blocks(title=title) as demo:
        build(Service.from_catalog())
    demo.queue().launch()


@dataclass
class Panel:
    """What a composition's panel adds to a tab: its controls by request field (what a result's info
    fills back in), and how an info value becomes a control's value."""
    controls: dict
    convert: dict


def merged(panels: dict) -> Panel:
    """The controls and conversions of every panel of a tab, together."""
    return Panel({k: c for p in panels.values() for k, c in p.controls.items()},
                 {k: f for p in panels.values() for k, f in p.convert.items()})


@dataclass
class Form:
    """A task tab's request form: its inputs by request field name (a composition's panel may add
    its own), how they make a request, where results show, and its Stop button."""
    task: str
    inputs: dict
    make_request: Callable        # ({field: value}) -> the task's request
    shown: Results
    stop: gr.Button
