"""Fair use of one device through Gradio's event queue (its internals: gradio is pinned in
requirements.txt, and tests/test_server.py checks the attributes used here still exist)."""
from __future__ import annotations

import inspect

import gradio as gr

from .errors import refuse
from .security import client_key

UNREAD_UPDATES = 12            # a job whose client left this many updates unread (3 s of them) has no client
QUEUE_POLL_SECONDS = 0.01      # how often Gradio's queue looks for work to start (its default: 0.001)
PROGRESS_POLL_SECONDS = 0.05   # and for progress to send (its default: 0.01)


def _queue(request: gr.Request):
    return request.request.app.get_blocks()._queue


def _client(req) -> str:
    return client_key(req.scope) if req is not None and hasattr(req, "scope") else "?"


def calm_queue(demo: gr.Blocks) -> gr.Blocks:
    """Gradio's queue polls for work 1000 times a second, idle or not, and those wakeups slow a
    generation (docs/design-notes.md); 100 a second costs a job at most 10 ms before it starts."""
    q = demo._queue
    q.sleep_when_free = QUEUE_POLL_SECONDS
    q.progress_update_sleep_when_free = PROGRESS_POLL_SECONDS
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


def quota(most: int | None, names: list[str], check=None):
    """A Gradio `validator` for an event whose inputs are `names`, run before the job is queued:
    `check({name: value})` may name a problem (refused), and a client holds at most `most`
    generations, running and waiting together."""
    def validator(*args):
        request = args[len(names)] if len(args) > len(names) else None
        problem = check(dict(zip(names, args))) if check is not None else None
        if problem:
            raise refuse(problem)
        if most and request is not None and getattr(request, "request", None) is not None:
            if client_jobs(request) >= most:
                raise refuse(f"you already have {most} generations running or waiting; wait for one to finish")
        return [gr.validate(True, "")] * len(names)
    return with_signature(validator, names)


def with_signature(fn, names: list[str], progress: bool = False):
    """`fn(*values, request[, progress])` as Gradio sees an event function of the named parameters
    `names`, then the gr.Request (found by its type hint) and, with `progress`, a gr.Progress."""
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
    params.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                    annotation=gr.Request))
    if progress:
        params.append(inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        default=gr.Progress()))
    fn.__signature__ = inspect.Signature(params)
    fn.__annotations__ = {"request": gr.Request}
    return fn
