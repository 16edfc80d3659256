"""The block every task tab shares, written once: Generate and Stop, the live preview, the
results and their parameters; and the event that turns the tab's named inputs into a request,
runs it on the studio (`ldm_core.service.Service`) with progress and cancel, and shows it."""
from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass
from typing import Callable

import gradio as gr

from ldm_core.jobs import Done, GenerationCancelled, duration
from ldm_core.preview import PREVIEW_SIDE, enlarged
from ldm_core.results import Result
from ldm_core.service import Service
from server.errors import user_error
from server.fair_use import abandonment, validator, with_signature
from server.owners import owner_of

GPU_CONCURRENCY_ID = "gpu"   # every event that runs a model shares this queue slot
IDLE = "Ready: Ctrl+Enter generates, Esc stops."
STOP_WAIT_SECONDS = 10.0     # Stop waits this long at most for the run to reach its next step
FORGET_SECONDS = 3600.0      # a run nobody stopped or finished (its page closed) is forgotten after this


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
    """Where a tab shows a run: a status line (stage, step, time spent and left; the queue while it
    waits), its live preview while it runs, then the images and their parameters."""
    preview: gr.Image
    gallery: gr.Gallery | gr.Image
    info: gr.Code
    status: gr.HTML
    single: bool = False          # one image (super-resolution), not a gallery

    @property
    def outputs(self) -> list:
        return [self.gallery, self.preview, self.info, self.status]


def buttons(prefix: str, label: str = "Generate") -> tuple[gr.Button, gr.Button]:
    """The Generate and Stop buttons of a tab (Stop inactive until a run starts; Ctrl+Enter and Esc
    press them: tabs/shortcuts.py)."""
    with gr.Row():
        generate = gr.Button(label, variant="primary", elem_id=f"{prefix}-generate")
        stop = gr.Button("Stop", variant="stop", interactive=False, elem_id=f"{prefix}-stop")
    return generate, stop


def results(prefix: str, columns: int = 4, single: bool = False, preview_height: int = PREVIEW_SIDE,
            status_id: str | None = None) -> Results:
    """The status line (`<prefix>-status`, or `status_id` where the tab has that id already), the
    preview (shown while a run goes), the results and their parameters of a tab."""
    status = gr.HTML(status_html(IDLE), min_height=32, elem_id=status_id or f"{prefix}-status")
    preview = gr.Image(label="Preview", height=preview_height, interactive=False, visible=False,
                       elem_id=f"{prefix}-preview")
    if single:   # one image, shown whole (a gallery cell would crop it)
        gallery = gr.Image(label="4× result", type="filepath", format="png", height=420, interactive=False,
                           elem_id=f"{prefix}-gallery")
    else:
        gallery = gr.Gallery(label="Images", columns=columns, height="auto", format="png", object_fit="contain",
                             interactive=False, elem_id=f"{prefix}-gallery")
    info = gr.Code(label="Parameters used", language="json", elem_id=f"{prefix}-info")
    return Results(preview, gallery, info, status, single)


def status_html(text: str, fraction: float | None = None) -> str:
    """The status line: `text`, and a bar of `fraction` done while a run goes."""
    bar = "" if fraction is None else (
        '<div style="height:4px;margin-top:4px;border-radius:2px;background:var(--border-color-primary)">'
        f'<div style="height:4px;width:{100 * min(max(fraction, 0.0), 1.0):.1f}%;border-radius:2px;'
        'background:var(--color-accent)"></div></div>')
    return f'<div class="ldm-status" role="status" style="padding:4px 2px">{html.escape(text)}{bar}</div>'


def job_events(studio: Service, request, client: gr.Request | None, previews: bool = True, running: dict | None = None):
    """Run `request` on the studio for the client's owner (`server/owners.py`); yield its Progress
    updates, then Done. Errors come as the user's message; closing this generator (Gradio does on
    Stop, or when the client leaves) cancels the run. `running` (a tab's Stop) gets the job while it runs."""
    job = studio.start(request, previews=previews, abandoned=abandonment(client),
                       owner=owner_of(client).key)
    if running is not None:
        running["job"] = job
    try:
        yield from job
    except gr.Error:
        raise
    except GenerationCancelled:
        if running is None or not running.get("stopped"):
            raise user_error(GenerationCancelled("cancelled")) from None
    except Exception as e:
        raise user_error(e) from None
    finally:
        job.cancel()


def progress_updates(studio: Service, request, client: gr.Request | None, running: dict | None = None):
    """Run `request`; yield (results, preview, info, status) updates while it runs, then the results."""
    shown = False
    for ev in job_events(studio, request, client, running=running):
        if isinstance(ev, Done):
            n = len(ev.paths)
            done = f"Done: {n} image{'s' * (n != 1)} in {duration(time.monotonic() - running['since'])}" \
                if running else "Done"
            yield ([str(p) for p in ev.paths], gr.Image(value=None, visible=False), json.dumps(ev.info, indent=1),
                   status_html(done))
            return
        preview = gr.skip()
        if ev.preview is not None:   # a new look, shown (once) at a useful size; never cleared between looks
            preview = enlarged(ev.preview) if shown else gr.Image(enlarged(ev.preview), label="Preview", visible=True)
            shown = True
        # an update every UPDATE_SECONDS: Gradio can only stop a generator between two of its updates,
        # so this is what lets Stop act within a fraction of a second
        yield gr.skip(), preview, gr.skip(), status_html(ev.describe().capitalize(), ev.fraction)


class Running:
    """The runs of one tab's Generate, by browser session: what its Stop stops and keeps."""

    def __init__(self):
        self._by_session: dict[str, dict] = {}

    def start(self, client: gr.Request | None, request) -> dict:
        entry = {"job": None, "since": time.monotonic(), "images": getattr(request, "num_images", 1) or 1}
        now = entry["since"]
        self._by_session = {k: v for k, v in self._by_session.items() if now - v["since"] < FORGET_SECONDS}
        self._by_session[_session(client)] = entry
        return entry

    def wait(self, client: gr.Request | None) -> None:
        """A run was asked for and waits in the queue (unless it has started already)."""
        if _session(client) not in self._by_session:
            self.start(client, None)

    def end(self, client: gr.Request | None, entry: dict) -> None:
        if self._by_session.get(_session(client)) is entry:
            del self._by_session[_session(client)]

    def pop(self, client: gr.Request | None) -> dict | None:
        return self._by_session.pop(_session(client), None)


def _session(client: gr.Request | None) -> str:
    return str(getattr(client, "session_hash", None))


def stopped(studio: Service, entry: dict | None, client: gr.Request | None, single: bool):
    """What Stop shows besides cancelling: at once that it stops; then, once the run has stopped at
    its next step, the images finished so far (saved, like any result) and the one in progress as its
    last preview, marked "interrupted". Nothing when this Generate had nothing running (the tab's
    other button, if any, had)."""
    inactive = gr.Button(interactive=False)
    if entry is None:
        yield [gr.skip()] * 4 + [inactive]
        return
    job = entry["job"]
    if job is None:
        gr.Info("Stopped before it started.")
        yield [gr.skip(), gr.skip(), gr.skip(), status_html(IDLE), inactive]
        return
    entry["stopped"] = True          # the run ends quietly: Stop shows what it kept
    job.cancel()
    yield [gr.skip(), gr.skip(), gr.skip(), status_html("Stopping at the next step…"), inactive]
    job.wait(STOP_WAIT_SECONDS)
    part = job.partial()
    paths = studio.save(Result(part.images, part.infos[:len(part.images)], {}), owner_of(client).key) \
        if part.images else []
    expected = part.expected or entry["images"]
    text = f"Stopped after {len(paths)} of {expected} image{'s' * (expected != 1)}"
    shown = [(str(p), "finished") for p in paths]
    preview = gr.Image(value=None, visible=False)
    if part.preview is not None and part.total:
        text += f", interrupted in {part.phase.label or part.phase.name} at step {part.step} of {part.total}"
        where = f"interrupted at {part.step}/{part.total}"
        if single:     # its one result box is for results: the interrupted look stays in the preview
            preview = gr.Image(enlarged(part.preview), label=f"Preview, {where}", visible=True)
        else:
            shown.append((enlarged(part.preview), where))
    gr.Info(text + ".")
    info = json.dumps({"stopped": text, "finished": part.infos[:len(paths)]}, indent=1, default=str)
    gallery = (shown[0][0] if shown else gr.skip()) if single else (shown or gr.skip())
    yield [gallery, preview, info, status_html(text + "."), inactive]


def wire(studio: Service, button: gr.Button, stop: gr.Button, inputs: dict, make_request: Callable,
         shown: Results, check: Callable | None = None):
    """`button` runs `make_request({input name: value})` on the studio and shows it in `shown`;
    `stop` cancels it and keeps what it finished. `check({name: value})` may name a problem, refused
    before the job is queued (so is a client over its quota: `server.fair_use.reserve_per_client`).
    Stop is active from the click to the run's end. Returns the event, for other buttons to cancel."""
    names, components = list(inputs), list(inputs.values())
    running = Running()

    def run(*values):
        client = values[len(names)]
        try:
            request = make_request(dict(zip(names, values[:len(names)])))
        except Exception as e:
            raise user_error(e) from None
        entry = running.start(client, request)
        try:
            for paths, preview, info, status in progress_updates(studio, request, client, entry):
                if shown.single and isinstance(paths, list):
                    paths = paths[0]
                yield paths, preview, info, status
        except gr.Error:
            running.end(client, entry)
            raise
        running.end(client, entry)

    def on_stop(request: gr.Request):
        yield from stopped(studio, running.pop(request), request, shown.single)

    def activate(request: gr.Request):
        running.wait(request)                    # waiting: a Stop now takes it out of the queue
        return gr.Button(interactive=True)

    active = button.click(activate, None, stop, queue=False, show_progress="hidden", api_visibility="private")
    event = active.then(gpu(with_signature(run, names)), components, shown.outputs, concurrency_id=GPU_CONCURRENCY_ID,
                        api_visibility="private", validator=validator(names, check), show_progress="full",
                        show_progress_on=[shown.status])
    event.then(lambda: gr.Button(interactive=False), None, stop, queue=False, show_progress="hidden",
               api_visibility="private")
    event.failure(lambda: (gr.Button(interactive=False), status_html("Failed: see the message.")), None,
                  [stop, shown.status], queue=False, show_progress="hidden", api_visibility="private")
    stop.click(on_stop, None, [*shown.outputs, stop], cancels=[event], concurrency_limit=None,
               show_progress="hidden", api_visibility="private")
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
