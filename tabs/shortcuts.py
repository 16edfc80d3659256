"""Keyboard shortcuts, as in AUTOMATIC1111's web UI: Ctrl+Enter (Cmd+Enter on a Mac) presses the
Generate button of the tab in sight (from a prompt box too, where it adds no newline), and Esc
presses its Stop while a run is active (Stop is inactive otherwise: tabs/common.buttons). Buttons
are found by their ids: `<prefix>-generate` and `<prefix>-stop` (compression's `compress-run`).

    with gr.Blocks(title=TITLE) as demo, shortcuts.keys(demo):
        ...
"""
from __future__ import annotations

from contextlib import contextmanager

import gradio as gr

JS = """() => {
  if (window.ldmShortcuts) return;
  window.ldmShortcuts = true;
  const inSight = (sel) => [...document.querySelectorAll(sel)]
    .filter((b) => b.getClientRects().length > 0 && !b.disabled);
  document.addEventListener('keydown', (e) => {            // capture: before a text box adds a newline
    if (e.key !== 'Enter' || !(e.ctrlKey || e.metaKey) || e.altKey || e.shiftKey || e.repeat) return;
    const button = inSight('button[id$="-generate"], button#compress-run')[0];
    if (!button) return;
    e.preventDefault();
    e.stopPropagation();
    button.click();
  }, true);
  document.addEventListener('keydown', (e) => {            // bubble: a menu or dialog may take Esc first
    if (e.key !== 'Escape' || e.defaultPrevented || e.repeat) return;
    const stop = inSight('button[id$="-stop"]')[0];
    if (!stop) return;
    e.preventDefault();
    stop.click();
  });
}"""


@contextmanager
def keys(demo: gr.Blocks):
    """Within `demo`'s context: the page gets the shortcuts when it loads."""
    demo.load(None, None, None, js=JS, api_visibility="private")
    yield demo
