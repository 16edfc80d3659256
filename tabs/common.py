"""What every tab shares: the narrow interface to the studio (`Studio`: run a request, look at a
preview, the catalog's choices, the limits), running a request with progress, live preview and
cancel; the sampling controls; error translation; the Spaces GPU decorator."""
from __future__ import annotations

import inspect
import json
import logging
import queue
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from typing import Callable, Iterator

import gradio as gr

from ldm_core.catalog import CatalogError, ModelEntry
from ldm_core.history import History
from ldm_core.xyplot import XYPlotRequest, plot
from ldm_core.limits import Limits
from ldm_core.pipelines.common import GenerationCancelled, StepInfo
from ldm_core.stack import ModelLoadError, ModelStack, OutOfMemory, TimeLimit
from ldm_core.tasks import TASKS
from ldm_core.validation import RequestError

log = logging.getLogger("tabs")
timing = logging.getLogger("tabs.timing")   # one line per generation: bench/run.py reads it


@dataclass(frozen=True)
class Studio:
    """What a tab needs of the studio, and nothing more."""
    generate: Callable          # (request, step callback) -> (saved PNG paths, info): validate, run, save
    preview: Callable           # (request, latents) -> a PIL image of the first image's latents, or None
    choices: Callable           # (task) -> [(label, model name)] for a model dropdown, availability said
    entry: Callable             # (task, model name or None: the default) -> its catalog entry
    published_scheduler: Callable   # (entry) -> the scheduler class it was published with, when known
    limits: Limits
    device: str
    tasks: tuple[str, ...]      # the tasks the catalog has a model for, in order
    history: Callable           # (limit) -> [ldm_core.history.Entry], newest first
    submit: Callable            # (fn) -> Future: fn runs on the studio's one device thread (ModelStack.submit)

    def default(self, task: str) -> ModelEntry:
        return self.entry(task, None)


def studio(stack: ModelStack) -> Studio:
    """The studio's interface to one resident model stack."""
    def generate(request, callback):
        t0, start = time.perf_counter(), time.time()
        if isinstance(request, XYPlotRequest):
            result = plot(stack, request.base, request.x, request.y, callback)
        else:
            result = stack.run(request, callback=callback)
        t1 = time.perf_counter()
        paths = stack.save(result)
        timing.info("%s from %.4f: run %.4f s (pipeline %.4f s), save %.4f s", result.info.get("task"), start,
                    t1 - t0, result.seconds, time.perf_counter() - t1)
        return paths, result.info

    def preview(request, latents):
        return stack.preview(request.base if isinstance(request, XYPlotRequest) else request, latents)
    return Studio(generate, preview, stack.model_choices, lambda task, name: stack.catalog.get(name, task),
                  stack.catalog.published_scheduler, stack.limits, stack.describe()["device"],
                  tuple(t for t in TASKS if stack.catalog.for_task(t)), History(stack.output_dir).entries,
                  stack.submit)

GPU_CONCURRENCY_ID = "gpu"   # every event that runs a model shares this queue slot

def gpu(fn):
    """On Hugging Face ZeroGPU Spaces, ask for a GPU for the duration of a generation (`spaces.GPU`,
    imported when a tab is built, not when this module is); elsewhere the function itself."""
    try:
        import spaces  # type: ignore
    except ImportError:
        return fn
    return spaces.GPU(fn)


def refuse(message: str) -> gr.Error:
    """An error for the user; the server log gets one line, not a traceback (the user's mistake
    is not the operator's fault, and real faults must stand out in the log)."""
    log.info("refused: %s", message[:300])
    return gr.Error(message, print_exception=False)


def user_error(e: Exception) -> gr.Error:
    """A message for the user, never a stack trace."""
    if isinstance(e, (RequestError, CatalogError, ModelLoadError, OutOfMemory, TimeLimit, ValueError)):
        return refuse(str(e))
    if isinstance(e, MemoryError) or "out of memory" in str(e).lower():
        return refuse("out of memory: try fewer images, fewer steps or a smaller size")
    log.error("generation failed", exc_info=e)   # the details go to the log, not to the user
    return gr.Error(f"generation failed ({type(e).__name__}); the server keeps running. See the server log.")


# ------------------------------------------------------------------ fair use of one device
UNREAD_UPDATES = 12        # a job whose client has left this many updates unread (3 s of them) has no client


def _queue(request: gr.Request):
    """Gradio's event queue (its internals: gradio is pinned in requirements.txt)."""
    return request.request.app.get_blocks()._queue


def _client(req) -> str:
    from .security import client_key
    return client_key(req.scope) if req is not None and hasattr(req, "scope") else "?"


QUEUE_POLL_SECONDS = 0.01      # how often Gradio's queue looks for work to start (its default: 0.001)
PROGRESS_POLL_SECONDS = 0.05   # and for progress to send (its default: 0.01)


def calm_queue(demo: gr.Blocks) -> gr.Blocks:
    """Gradio's queue polls for work 1000 times a second, idle or not; on 2 CPU cores those wakeups
    took a 64x64 generation from 0.55 s to 0.60-0.66 s (bench/run.py --sections request). 100 a
    second costs a job at most 10 ms before it starts. (Attributes of gradio's Queue, which is pinned
    in requirements.txt; tests/test_server.py checks they exist.)"""
    q = demo._queue
    q.sleep_when_free, q.progress_update_sleep_when_free = QUEUE_POLL_SECONDS, PROGRESS_POLL_SECONDS
    return demo


def client_jobs(request: gr.Request) -> int:
    """How many generations this request's client has running or waiting."""
    q, me = _queue(request), _client(request.request)
    events = [e for eq in q.event_queue_per_concurrency_id.values() for e in eq.queue]
    events += [e for job in q.active_jobs if job for e in job]
    return sum(_client(e.request) == me for e in events)


def client_gone(request: gr.Request | None) -> bool:
    """Whether nobody reads this job's updates any more (an API call whose results are never
    fetched; a browser that leaves is seen by Gradio itself)."""
    if request is None or getattr(request, "request", None) is None:
        return False
    pending = _queue(request).pending_messages_per_session.get(request.session_hash)
    return pending is not None and pending.qsize() > UNREAD_UPDATES


def quota(studio: Studio, n_inputs: int):
    """A Gradio `validator` for an event of `n_inputs` inputs, run before the job is queued: a
    client holds at most `limits.max_jobs_per_client` generations, running and waiting together."""
    def validator(*args):
        request, most = (args[n_inputs] if len(args) > n_inputs else None), studio.limits.max_jobs_per_client
        if most and request is not None and getattr(request, "request", None) is not None:
            if client_jobs(request) >= most:
                raise refuse(f"you already have {most} generations running or waiting; wait for one to finish")
        return [gr.validate(True, "")] * n_inputs
    params = [inspect.Parameter(f"x{i}", inspect.Parameter.POSITIONAL_OR_KEYWORD) for i in range(n_inputs)]
    params.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                    annotation=gr.Request))
    validator.__signature__ = inspect.Signature(params)
    validator.__annotations__ = {"request": gr.Request}      # Gradio finds the request by its type hint
    return validator


@dataclass
class Progress:
    step: int
    total: int
    preview: object | None = None


FIRST_UPDATE_SECONDS = 1.0  # a running job's first update (progress, preview) comes after this long,
UPDATE_SECONDS = 0.25       # then one at most this often; a shorter job sends none
PREVIEW_SECONDS = 0.5       # and a live preview at most this often


def stream(studio: Studio, request, previews: bool = True, client: gr.Request | None = None
           ) -> Iterator[Progress | tuple]:
    """Run `request` on the studio's device thread; yield Progress while it runs, then (paths, info).

    Updates are timed, not per step: each wakes Gradio's threads beside the generation and costs
    it about 10 ms on 2 CPU cores; one per step made a 0.55 s image take 0.78 s, one per 0.25 s
    0.59 s (bench/run.py --sections request). A job shorter than FIRST_UPDATE_SECONDS sends none.
    Closing the generator (Gradio does so when the user presses Stop or the client disconnects,
    at the next update) sets the cancel flag; the pipeline stops at its next step. So does a
    client that stopped reading the updates (`client_gone`)."""
    events: queue.Queue = queue.Queue()
    cancel = threading.Event()
    due = {"update": time.monotonic() + FIRST_UPDATE_SECONDS, "preview": 0.0}

    def on_step(s: StepInfo) -> bool:
        now = time.monotonic()
        if s.step < s.total and now >= due["update"]:
            due["update"] = now + UPDATE_SECONDS
            if not cancel.is_set() and client_gone(client):
                log.info("a client stopped reading its updates: generation cancelled at step %d", s.step)
                cancel.set()
            preview = None
            if previews and now >= due["preview"]:
                due["preview"] = now + PREVIEW_SECONDS
                try:
                    preview = studio.preview(request, s.latents)
                except Exception:  # a preview is never worth failing a generation
                    preview = None
            events.put(Progress(s.step, s.total, preview))
        return cancel.is_set()

    def work():
        if cancel.is_set():           # stopped while it waited for the device
            events.put(("error", GenerationCancelled("cancelled before it started")))
            return
        try:
            events.put(("done", *studio.generate(request, on_step)))
        except BaseException as e:  # handed to the caller's thread
            events.put(("error", e))

    studio.submit(work)
    try:
        while True:
            ev = events.get()
            if isinstance(ev, Progress):
                yield ev
            elif ev[0] == "done":
                yield ev[1], ev[2]
                return
            else:
                err = ev[1]
                if isinstance(err, GenerationCancelled):
                    raise refuse("cancelled")
                raise user_error(err)
    finally:
        cancel.set()


def stopped():
    """What Stop does besides cancelling: says so, and clears the last (noisy) preview."""
    gr.Info("Stopped: the generation was cancelled.")
    return None


def run_with_progress(studio: Studio, request, progress: gr.Progress | None, client: gr.Request | None = None):
    """Generator for a Gradio event: yields (gallery, preview, info) updates."""
    # closed (Stop, a client gone): the generation stops
    with closing(stream(studio, request, client=client)) as events:
        for ev in events:
            if isinstance(ev, Progress):
                if progress is not None:
                    progress((ev.step, ev.total), desc="denoising", unit="steps")
                # an update every UPDATE_SECONDS, even an empty one: Gradio can only stop a generator
                # between two of its updates, so this is what lets Stop act within a fraction of a second
                yield gr.skip(), (gr.skip() if ev.preview is None else ev.preview), gr.skip()
            else:
                paths, info = ev
                yield [str(p) for p in paths], None, json.dumps(info, indent=1)


# the shared controls live in controls.py; re-exported for the tabs
from .controls import (  # noqa: E402, F401
    SamplingControls,
    info_updates,
    sampling_controls,
    hires_controls,
    sampler_choices,
    model_defaults,
    item_path,
    selected_image,
    first_image,
)
