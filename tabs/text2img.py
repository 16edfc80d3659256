"""Text -> Image tab."""
from __future__ import annotations

from dataclasses import dataclass, fields

import gradio as gr

from ldm_core.stack import ModelStack
from ldm_core.tasks import TASKS
from ldm_core.tasks.text2img import Text2ImgRequest
from ldm_core.xyplot import AXES, Axis, XYPlotRequest

from .common import (
    GPU_CONCURRENCY_ID,
    SamplingControls,
    Studio,
    first_image,
    gpu,
    hires_controls,
    model_defaults,
    quota,
    run_with_progress,
    sampling_controls,
    selected_image,
    stopped,
    studio,
)

EXAMPLES = ["a red circle left of a blue square", "a yellow triangle", "a green diamond above a magenta circle",
            "a cyan square, a red triangle and a blue circle"]


@dataclass
class Text2ImgTab:
    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    controls: SamplingControls
    gallery: gr.Gallery
    selected: gr.State
    send: dict[str, gr.Button]    # task -> its "send to" button (every task that takes an image)
    hires: gr.Checkbox
    hires_model: gr.Dropdown
    convert = {"hires": bool}     # info value -> control value (the info holds the second stage's details)

    def params(self) -> dict:
        """The controls a result's info fills in (PNG info's "send to"), by info key."""
        return {"prompt": self.prompt, "negative_prompt": self.negative_prompt, **self.controls.params(),
                "hires": self.hires, "hires_model": self.hires_model}


def xyplot_controls() -> tuple[gr.Button, gr.Dropdown, gr.Textbox, gr.Dropdown, gr.Textbox]:
    """The X/Y plot's accordion: its Plot button, then each axis and its values."""
    with gr.Accordion("X/Y plot: one parameter against another", open=False, elem_id="t2i-xyplot"):
        with gr.Row():
            x_axis = gr.Dropdown(list(AXES), value="guidance_scale", label="X axis", elem_id="xy-x-axis")
            x_values = gr.Textbox("1, 4, 8", label="X values (comma-separated)", elem_id="xy-x-values")
        with gr.Row():
            y_axis = gr.Dropdown(["(none)", *AXES], value="seed", label="Y axis", elem_id="xy-y-axis")
            y_values = gr.Textbox("1, 2", label="Y values", elem_id="xy-y-values")
        plot = gr.Button("Plot", elem_id="xy-plot")
    return plot, x_axis, x_values, y_axis, y_values


def build(studio: Studio) -> Text2ImgTab:
    with gr.Row(elem_id="t2i-row"):
        with gr.Column(scale=2, elem_id="t2i-left"):
            prompt = gr.Textbox(label="Prompt", lines=2, placeholder="a red circle left of a blue square",
                                elem_id="t2i-prompt")
            negative = gr.Textbox(label="Negative prompt", lines=1)
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="t2i-generate")
                stop = gr.Button("Stop", variant="stop", elem_id="t2i-stop")
            with gr.Column(elem_id="t2i-settings"):      # on a phone: below the results (webui.CSS)
                controls = sampling_controls(studio, "text2img")
                hires, hires_model = hires_controls(studio, "text2img")
                plot, *axes = xyplot_controls()
                gr.Examples(EXAMPLES, inputs=[prompt])
        with gr.Column(scale=3, elem_id="t2i-results"):
            preview = gr.Image(label="Preview", height=160, interactive=False, visible=True, elem_id="t2i-preview")
            gallery = gr.Gallery(label="Images", columns=4, height="auto", format="png", elem_id="t2i-gallery",
                                 object_fit="contain", interactive=False)
            with gr.Row():
                send = {t.name: gr.Button(f"Send to {t.title.lower()}", size="sm", elem_id=f"t2i-send-{t.name}")
                        for t in map(TASKS.get, studio.tasks) if "image" in {f.name for f in fields(t.request)}}
            info = gr.Code(label="Parameters used", language="json")
    selected = gr.State(None)

    @gpu
    def run(prompt, negative_prompt, steps, guidance_scale, seed, num_images, width, height, sampler, model, hires,
            hires_model, request: gr.Request, progress=gr.Progress()):
        req = Text2ImgRequest(prompt=prompt, negative_prompt=negative_prompt, steps=steps,
                              guidance_scale=guidance_scale, seed=seed, num_images=num_images, width=width,
                              height=height, sampler=sampler, model=model, hires=bool(hires), hires_model=hires_model)
        yield from run_with_progress(studio, req, progress, request)

    @gpu
    def run_plot(prompt, negative_prompt, steps, guidance_scale, seed, num_images, width, height, sampler, model,
                 hires, hires_model, x_axis, x_values, y_axis, y_values, request: gr.Request, progress=gr.Progress()):
        base = Text2ImgRequest(prompt=prompt, negative_prompt=negative_prompt, steps=steps,
                               guidance_scale=guidance_scale, seed=seed, width=width, height=height, sampler=sampler,
                               model=model)
        y = Axis(y_axis, y_values) if y_axis and y_axis != "(none)" else None
        yield from run_with_progress(studio, XYPlotRequest(base, Axis(x_axis, x_values), y), progress, request)

    c = controls
    inputs = [prompt, negative, c.steps, c.guidance_scale, c.seed, c.num_images, c.width, c.height, c.sampler,
              c.model, hires, hires_model]
    ev = generate.click(run, inputs, [gallery, preview, info], concurrency_id=GPU_CONCURRENCY_ID,
                        api_visibility="private", validator=quota(studio, len(inputs)))
    plot_inputs = [*inputs, *axes]
    plotting = plot.click(run_plot, plot_inputs, [gallery, preview, info], concurrency_id=GPU_CONCURRENCY_ID,
                          api_visibility="private", validator=quota(studio, len(plot_inputs)))
    stop.click(stopped, None, preview, cancels=[ev, plotting], api_visibility="private")
    c.model.change(lambda m: model_defaults(studio, "text2img", m), c.model,
                   [c.steps, c.guidance_scale, c.sampler, c.width, c.height], api_visibility="private")
    gallery.select(selected_image, gallery, selected, api_visibility="private")
    gallery.change(first_image, gallery, selected, api_visibility="private")
    return Text2ImgTab(prompt, negative, controls, gallery, selected, send, hires, hires_model)


if __name__ == "__main__":
    with gr.Blocks(title="Text → Image") as demo:
        build(studio(ModelStack.from_catalog()))
    demo.queue().launch()
