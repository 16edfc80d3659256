"""Image -> Image tab: an input image redrawn towards a prompt, as much as `strength` says (SDEdit)."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ldm_core.stack import ModelStack
from ldm_core.tasks.img2img import Img2ImgRequest

from .common import (
    GPU_CONCURRENCY_ID,
    SamplingControls,
    Studio,
    gpu,
    model_defaults,
    quota,
    run_with_progress,
    sampling_controls,
    stopped,
    studio,
)


@dataclass
class Img2ImgTab:
    image_input: gr.Image         # "send to" targets this
    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    strength: gr.Slider
    controls: SamplingControls
    gallery: gr.Gallery

    def params(self) -> dict:
        """The controls a result's info fills in (PNG info's "send to"), by info key."""
        return {"prompt": self.prompt, "negative_prompt": self.negative_prompt, "strength": self.strength,
                **self.controls.params()}


def build(studio: Studio) -> Img2ImgTab:
    with gr.Row():
        with gr.Column(scale=2):
            image = gr.Image(label="Input image", type="filepath", image_mode="RGB", height=320, elem_id="i2i-input")
            prompt = gr.Textbox(label="Prompt (what it should become)", lines=2, elem_id="i2i-prompt",
                                placeholder="a blue square left of a green circle")
            negative = gr.Textbox(label="Negative prompt", lines=1)
            strength = gr.Slider(0, 1, value=0.75, step=0.05, elem_id="i2i-strength",
                                 label="Strength (0 = the input unchanged, 1 = ignore it)")
            with gr.Row():
                generate = gr.Button("Redraw", variant="primary", elem_id="i2i-generate")
                stop = gr.Button("Stop", variant="stop")
            controls = sampling_controls(studio, "img2img", size=False)
        with gr.Column(scale=3):
            preview = gr.Image(label="Preview", height=160, interactive=False)
            gallery = gr.Gallery(label="Images", columns=4, height="auto", format="png", elem_id="i2i-gallery",
                                 object_fit="contain", interactive=False)
            info = gr.Code(label="Parameters used", language="json")

    @gpu
    def run(image, prompt, negative_prompt, strength, steps, guidance_scale, seed, num_images, sampler, model,
            request: gr.Request, progress=gr.Progress()):
        req = Img2ImgRequest(image=image, prompt=prompt, negative_prompt=negative_prompt, strength=strength,
                             steps=steps, guidance_scale=guidance_scale, seed=seed, num_images=num_images,
                             sampler=sampler, model=model)
        yield from run_with_progress(studio, req, progress, request)

    c = controls
    inputs = [image, prompt, negative, strength, c.steps, c.guidance_scale, c.seed, c.num_images, c.sampler, c.model]
    ev = generate.click(run, inputs, [gallery, preview, info], concurrency_id=GPU_CONCURRENCY_ID,
                        api_visibility="private", validator=quota(studio, len(inputs)))
    stop.click(stopped, None, preview, cancels=[ev], api_visibility="private")
    c.model.change(lambda m: model_defaults(studio, "img2img", m)[:3], c.model,
                   [c.steps, c.guidance_scale, c.sampler], api_visibility="private")
    return Img2ImgTab(image, prompt, negative, strength, controls, gallery)


if __name__ == "__main__":
    with gr.Blocks(title="Image → Image") as demo:
        build(studio(ModelStack.from_catalog()))
    demo.queue().launch()
