"""Fair use of one device through Gradio's event queue (its internals: gradio is pinned in
requirements.txt, and tests/test_server.py checks the attributes used here still exist)."""
from __future__ import annotations

import asyncio
import inspect
import logging
import time

import gradio as gr

from .errors import refuse
from .security import client_key

log = logging.getLogger("server")

ABANDON_SECONDS = 5.0          # an update left unread this long: nobody reads the job's updates
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


def reserve_per_client(demo: gr.Blocks, most: int | None, concurrency_id: str) -> gr.Blocks:
    """A client holds at most `most` generations (events of `concurrency_id`), running and waiting
    together. The count is an atomic reservation taken when a job joins the queue: joins are
    admitted one at a time, each counting the client's live events (Gradio's `event_ids_to_events`,
    from which an event leaves however it ends: done, failed, cancelled, its client gone), so no
    two joins can both see room for one. Returns `demo`."""
    if not most:
        return demo
    q = demo._queue
    admit = q.push
    lock = asyncio.Lock()

    async def push(body, request, username):
        fn = q.blocks.fns.get(body.fn_index) if body.fn_index is not None else None
        full = q.max_size is not None and len(q) >= q.max_size      # Gradio answers "queue full" first
        if fn is None or fn.concurrency_id != concurrency_id or full:
            return await admit(body, request, username)
        me = client_key(request.scope)
        async with lock:
            held = live_jobs(q, concurrency_id, me)
            if held >= most:
                log.info("refused: %s already holds %d generations", me, held)
                return False, f"you already have {most} generations running or waiting; wait for one to finish", \
                    "error"
            return await admit(body, request, username)
    q.push = push
    return demo


def generation_concurrency(demo: gr.Blocks, concurrency_id: str, n: int) -> gr.Blocks:
    """Generation events (`concurrency_id`) run `n` at a time: one per device or replica, so that
    Gradio's queue positions count the generations that really wait."""
    for fn in demo.fns.values():
        if fn.concurrency_id == concurrency_id:
            fn.concurrency_limit = n
    return demo


def live_jobs(q, concurrency_id: str, client: str) -> int:
    """How many events of `concurrency_id` this client has in the queue or running."""
    return sum(1 for e in list(q.event_ids_to_events.values())
               if e.fn.concurrency_id == concurrency_id and e.request is not None and _client(e.request) == client)


def abandonment(request: gr.Request | None):
    """A check for one job: true once nobody reads its updates (an API call whose results are never
    fetched; a browser that leaves is seen by Gradio itself). Decided by time, not by a count of
    updates, so it holds at any machine speed: the oldest unread update of the job's session has
    waited ABANDON_SECONDS (a reader takes each within milliseconds)."""
    seen = {"message": None, "since": time.monotonic(), "checked": False}

    def gone() -> bool:
        if request is None or getattr(request, "request", None) is None:
            return False
        pending = _queue(request).pending_messages_per_session.get(request.session_hash)
        try:
            oldest = pending._queue[0] if pending is not None else None    # asyncio.Queue's deque
        except IndexError:        # emptied meanwhile
            oldest = None
        now = time.monotonic()
        if oldest is not seen["message"]:
            # a message waiting at the first look has waited since the job began (a live reader's queue is
            # empty then), so a short job is judged too; after that, from when a new oldest is seen
            seen["message"], seen["since"] = oldest, seen["since"] if not seen["checked"] else now
        seen["checked"] = True
        return oldest is not None and now - seen["since"] >= ABANDON_SECONDS
    return gone


def validator(names: list[str], check=None):
    """A Gradio `validator` for an event whose inputs are `names`, run before the job is queued.
    Gradio decodes the inputs for it, so a bad upload is refused at once, not after the queue;
    `check({name: value})` may name a problem, refused with that message."""
    def validate(*args):
        problem = check(dict(zip(names, args))) if check is not None else None
        if problem:
            raise refuse(problem)
        return [gr.validate(True, "")] * len(names)
    return with_signature(validate, names)


def with_signature(fn, names: list[str], progress: bool = False, optional=()):
    """`fn(*values, request[, progress])` as Gradio sees an event function of the named parameters
    `names`, then the gr.Request (found by its type hint) and, with `progress`, a gr.Progress. Names
    in `optional` default to None (an API parameter left unset: the model's own default applies)."""
    first = min((names.index(n) for n in optional if n in names), default=len(names))
    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD,   # (no default may follow a default)
                                default=None if i >= first else inspect.Parameter.empty) for i, n in enumerate(names)]
    params.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                    annotation=gr.Request))
    if progress:
        params.append(inspect.Parameter("progress", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                        default=gr.Progress()))
    fn.__signature__ = inspect.Signature(params)
    fn.__annotations__ = {"request": gr.Request}
    return fn
