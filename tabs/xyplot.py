"""The X/Y plot in the tabs of the tasks it plots (text -> image, unconditional, class -> image):
one parameter against another, as one labelled grid (`ldm_core/compositions/xyplot.py`), run with
the tab's other settings."""
from __future__ import annotations

import gradio as gr

from ldm_core.compositions.xyplot import XYPlotRequest, axes_of, build, label
from ldm_core.service import Service
from ldm_core.tasks import TASKS

from .common import Form, Panel, wire

AXIS_NAMES = ("x_axis", "x_values", "y_axis", "y_values")
NOT_IN_A_CELL = ("num_images", "hires", "hires_model")     # a cell is one image, without a second stage
EXAMPLES = {"guidance_scale": "1, 4, 8", "steps": "10, 25, 50", "eta": "0, 0.5, 1", "seed": "1, 2"}
VALUES_HELP = "comma-separated; prompt S/R: red|blue|green (the first is found in the prompt)"


def panel(studio: Service, form: Form) -> Panel:
    """The plot's accordion: each axis and its values, and its Plot button."""
    axes_here = axes_of(TASKS[form.task].request)
    x0 = next(a for a in ("guidance_scale", "eta", "steps") if a in axes_here)
    prefix = "" if form.task == "text2img" else f"{form.task}-"     # the text2img ids stay as they were
    elem = "t2i-xyplot" if form.task == "text2img" else f"{form.task}-xyplot"
    choices = [(label(a), a) for a in axes_here]          # readable names; the request gets the API's
    with gr.Accordion("X/Y plot: one parameter against another", open=False, elem_id=elem):
        with gr.Row():
            x_axis = gr.Dropdown(choices, value=x0, label="X axis", elem_id=f"{prefix}xy-x-axis")
            x_values = gr.Textbox(EXAMPLES[x0], label="X values", info=VALUES_HELP, elem_id=f"{prefix}xy-x-values")
        with gr.Row():
            y_axis = gr.Dropdown([("(none)", "(none)"), *choices], value="seed", label="Y axis",
                                 elem_id=f"{prefix}xy-y-axis")
            y_values = gr.Textbox("1, 2", label="Y values", info=VALUES_HELP, elem_id=f"{prefix}xy-y-values")
        plot = gr.Button("Plot", elem_id=f"{prefix}xy-plot")
    axes = dict(zip(AXIS_NAMES, (x_axis, x_values, y_axis, y_values)))
    base_inputs = {k: v for k, v in form.inputs.items() if k not in NOT_IN_A_CELL}

    def make_request(values: dict) -> XYPlotRequest:
        options = {k: values.pop(k) for k in AXIS_NAMES}
        return build(form.make_request({**values, "num_images": 1}), options)

    wire(studio, plot, form.stop, {**base_inputs, **axes}, make_request, form.shown)
    return Panel({}, {})     # a plot's info keeps its axes under "xyplot": nothing to fill back in
