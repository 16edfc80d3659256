"""The X/Y plot in the text -> image tab: one parameter against another, as one labelled grid
(`ldm_core/compositions/xyplot.py`), run with the tab's other settings."""
from __future__ import annotations

import gradio as gr

from ldm_core.compositions.xyplot import AXES, COMPOSITION, XYPlotRequest, build
from ldm_core.service import Service

from .common import Form, Panel, wire

AXIS_NAMES = ("x_axis", "x_values", "y_axis", "y_values")


def panel(studio: Service, form: Form) -> Panel:
    """The plot's accordion: each axis and its values, and its Plot button."""
    with gr.Accordion("X/Y plot: one parameter against another", open=False, elem_id="t2i-xyplot"):
        with gr.Row():
            x_axis = gr.Dropdown(list(AXES), value="guidance_scale", label="X axis", elem_id="xy-x-axis")
            x_values = gr.Textbox("1, 4, 8", label="X values (comma-separated)", elem_id="xy-x-values")
        with gr.Row():
            y_axis = gr.Dropdown(["(none)", *AXES], value="seed", label="Y axis", elem_id="xy-y-axis")
            y_values = gr.Textbox("1, 2", label="Y values", elem_id="xy-y-values")
        plot = gr.Button("Plot", elem_id="xy-plot")
    axes = dict(zip(AXIS_NAMES, (x_axis, x_values, y_axis, y_values)))
    base_inputs = {k: v for k, v in form.inputs.items() if k in COMPOSITION.api}   # a cell: one image, no hires

    def make_request(values: dict) -> XYPlotRequest:
        options = {k: values.pop(k) for k in AXIS_NAMES}
        return build(form.make_request(values), options)

    wire(studio, plot, form.stop, {**base_inputs, **axes}, make_request, form.shown)
    return Panel({}, {})     # a plot's info keeps its axes under "xyplot": nothing to fill back in
