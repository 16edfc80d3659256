"""Hires in a text or layout tab: each result upscaled 4x by a super-resolution model in the
same request (`ldm_core/compositions/hires.py`)."""
from __future__ import annotations

import gradio as gr

from ldm_core.service import Service

from .common import Form, Panel


def panel(studio: Service, form: Form) -> Panel:
    """The hires checkbox and its model, as the request fields `hires` and `hires_model`."""
    choices = studio.choices("superres")
    with gr.Row():
        on = gr.Checkbox(False, label="Hires: then 4× super-resolution of each image", elem_id=f"{form.task}-hires")
        model = gr.Dropdown(choices, value=choices[0][1], label="Super-resolution model",
                            elem_id=f"{form.task}-hires-model")
    form.inputs.update(hires=on, hires_model=model)
    # a result's info holds the second stage's details under "hires": any means it was on
    return Panel({"hires": on, "hires_model": model}, {"hires": bool})
