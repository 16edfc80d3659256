"""Results come into sight where the user clicked: a button that starts a run (Generate, Plot, Compress)
scrolls its tab's status line into view when it is off screen (a phone's X/Y plot button sits far below
the results; a tall form pushes them down), so a click never seems to do nothing.

    with gr.Blocks() as demo:
        in_sight.results_follow_clicks(demo)
"""
from __future__ import annotations

import gradio as gr

JS = """() => {
  if (window.ldmInSight) return;
  window.ldmInSight = true;
  document.addEventListener('click', (e) => {
    const starts = 'button[id$="-generate"], button[id$="xy-plot"], button#compress-run';
    const button = e.target.closest && e.target.closest(starts);
    if (!button) return;
    const tab = button.closest('.tabitem') || document;
    const shown = [...tab.querySelectorAll('[id$="-status"], [id$="-gallery"], #compress-gallery')]
      .filter((el) => el.getClientRects().length > 0);
    if (!shown.length) return;
    setTimeout(() => {
      const r = shown[0].getBoundingClientRect();
      if (r.top < 0 || r.top > window.innerHeight * 0.75)
        shown[0].scrollIntoView({block: 'start', behavior: 'smooth'});
    }, 50);
  });
}"""


def results_follow_clicks(demo: gr.Blocks) -> None:
    """The page gets the behaviour when it loads."""
    demo.load(None, None, None, js=JS, api_visibility="private")
