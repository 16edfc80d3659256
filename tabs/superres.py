"""Super-resolution tab: upload, 4x, the result beside the input."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ldm_core.catalog import CatalogError
from ldm_core.stack import ModelStack
from ldm_core.tasks.superres import DEFAULT_BACK_PROJECTION, SuperResRequest

from .common import GPU_CONCURRENCY_ID, Studio, gpu, quota, run_with_progress, sampler_choices, stopped, studio


@dataclass
class SuperResTab:
    image: gr.Image
    steps: gr.Slider
    seed: gr.Number
    model: gr.Dropdown
    gallery: gr.Image
    back_projection: gr.Slider
    average: gr.Slider

    @property
    def image_input(self):
        """What "send to" fills."""
        return self.image

    def params(self) -> dict:
        """The controls a result's info fills in (PNG info's "send to"), by info key."""
        return {"steps": self.steps, "seed": self.seed, "model": self.model, "back_projection": self.back_projection,
                "average": self.average}


def build(studio: Studio) -> SuperResTab:
    entry = studio.default("superres")
    with gr.Row():
        with gr.Column():
            image = gr.Image(label="Low-resolution input", type="filepath", image_mode="RGB", height=320,
                             elem_id="sr-input")
            model = gr.Dropdown(studio.choices("superres"), value=entry.name, label="Model")
            with gr.Row():
                steps = gr.Slider(1, 100, value=entry.steps, step=1, label="Steps")
                seed = gr.Number(-1, precision=0, label="Seed (-1 = random)", minimum=-1)
                sampler = gr.Dropdown(sampler_choices(studio, entry), value=entry.sampler, label="Sampler")
            with gr.Accordion("Advanced", open=False):
                back_projection = gr.Slider(0, studio.limits.max_back_projection, value=DEFAULT_BACK_PROJECTION,
                                            step=1, label="Back-projection onto the input (iterations; 0 = off, "
                                            "as diffusers)", elem_id="sr-back-projection")
                average = gr.Slider(1, studio.limits.max_average, value=entry.average, step=1,
                                    label="Samples averaged per image (1 = one sample, as diffusers)",
                                    elem_id="sr-average")
            with gr.Row():
                generate = gr.Button("Upscale 4×", variant="primary", elem_id="sr-generate")
                stop = gr.Button("Stop", variant="stop")
        with gr.Column():
            gallery = gr.Image(label="4× result", type="filepath", format="png", height=420, interactive=False,
                               elem_id="sr-gallery")    # one image, shown whole (a gallery cell cropped it)
            preview = gr.Image(label="Preview", height=120, interactive=False)
            info = gr.Code(label="Parameters used", language="json", elem_id="sr-info")

    @gpu
    def run(image, steps, seed, sampler, model, back_projection, average, request: gr.Request,
            progress=gr.Progress()):
        req = SuperResRequest(image=image, steps=steps, seed=seed, sampler=sampler, model=model,
                              back_projection=back_projection, average=average)
        for result, preview, info in run_with_progress(studio, req, progress, request):
            yield (result[0] if isinstance(result, list) else result), preview, info

    def model_changed(name):
        try:
            e = studio.entry("superres", name)
        except CatalogError:
            return (gr.skip(),) * 3
        return e.steps, gr.update(choices=sampler_choices(studio, e), value=e.sampler), e.average

    ev = generate.click(run, [image, steps, seed, sampler, model, back_projection, average], [gallery, preview, info],
                        concurrency_id=GPU_CONCURRENCY_ID, api_visibility="private", validator=quota(studio, 7))
    model.change(model_changed, model, [steps, sampler, average], api_visibility="private")
    stop.click(stopped, None, preview, cancels=[ev], api_visibility="private")
    return SuperResTab(image, steps, seed, model, gallery, back_projection, average)


if __name__ == "__main__":
    with gr.Blocks(title="Super-resolution") as demo:
        build(studio(ModelStack.from_catalog()))
    demo.queue().launch()
