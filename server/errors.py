"""The errors a user sees: a message, never a stack trace."""
from __future__ import annotations

import logging

import gradio as gr

from ldm_core.catalog import CatalogError
from ldm_core.limits import TimeLimit
from ldm_core.loading import ModelLoadError
from ldm_core.pipelines.common import GenerationCancelled
from ldm_core.requests import RequestError
from ldm_core.stack import OutOfMemory

log = logging.getLogger("server")


def refuse(message: str) -> gr.Error:
    """An error for the user; the server log gets one line, not a traceback (the user's mistake
    is not the operator's fault, and real faults must stand out in the log)."""
    log.info("refused: %s", message[:300])
    return gr.Error(message, print_exception=False)


def user_error(e: BaseException) -> gr.Error:
    """A message for the user, never a stack trace."""
    if isinstance(e, gr.Error):
        return e
    if isinstance(e, GenerationCancelled):
        return refuse("cancelled")
    if isinstance(e, (RequestError, CatalogError, ModelLoadError, OutOfMemory, TimeLimit, ValueError)):
        return refuse(str(e))
    if isinstance(e, MemoryError) or "out of memory" in str(e).lower():
        return refuse("out of memory: try fewer images, fewer steps or a smaller size")
    log.error("generation failed", exc_info=e)   # the details go to the log, not to the user
    return gr.Error(f"generation failed ({type(e).__name__}); the server keeps running. See the server log.")
