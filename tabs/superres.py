"""Super-resolution tab: upload, 4x, the result beside the input."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ldm_core.pipelines import SAMPLERS
from ldm_core.requests import SuperResRequest
from ldm_core.stack import ModelStack

from .common import GPU_CONCURRENCY_ID, first_image, gpu, run_with_progress


@dataclass
class SuperResTab:
    image: gr.Image
    steps: gr.Slider
    seed: gr.Number
    model: gr.Dropdown
    gallery: gr.Gallery

    def param_components(self):
        return [self.steps, self.seed, self.model]

    @staticmethod
    def apply_params(p: dict):
        return [p.get("steps", gr.skip()), p.get("seed", -1), p.get("model", gr.skip())]


def build(stack: ModelStack) -> SuperResTab:
    entry = stack.catalog.default("superres")
    with gr.Row():
        with gr.Column():
            image = gr.Image(label="Low-resolution input", type="filepath", image_mode="RGB", height=320,
                             elem_id="sr-input")
            model = gr.Dropdown(stack.catalog.choices("superres"), value=entry.name, label="Model")
            with gr.Row():
                steps = gr.Slider(1, 100, value=entry.steps, step=1, label="Steps")
                seed = gr.Number(-1, precision=0, label="Seed (-1 = random)", minimum=-1)
                sampler = gr.Dropdown(list(SAMPLERS), value=entry.sampler, label="Sampler")
            with gr.Row():
                generate = gr.Button("Upscale 4×", variant="primary", elem_id="sr-generate")
                stop = gr.Button("Stop", variant="stop")
        with gr.Column():
            gallery = gr.Gallery(label="4× result", columns=1, height=320, format="png", elem_id="sr-gallery",
                                 object_fit="contain")
            preview = gr.Image(label="Preview", height=120, interactive=False)
            info = gr.Code(label="Parameters used", language="json")

    @gpu
    def run(image, steps, seed, sampler, model, progress=gr.Progress()):
        req = SuperResRequest(image=image, steps=steps, seed=seed, sampler=sampler, model=model)
        yield from run_with_progress(stack, req, progress)

    ev = generate.click(run, [image, steps, seed, sampler, model], [gallery, preview, info],
                        concurrency_id=GPU_CONCURRENCY_ID, api_visibility="private")
    stop.click(None, cancels=[ev], api_visibility="private")
    return SuperResTab(image, steps, seed, model, gallery)


if __name__ == "__main__":
    with gr.Blocks(title="Super-resolution") as demo:
        build(ModelStack.from_catalog())
    demo.queue().launch()
