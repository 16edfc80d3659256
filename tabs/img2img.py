"""Image -> Image tab: an input image redrawn towards a prompt, as much as `strength` says (SDEdit)."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ldm_core.service import Service
from ldm_core.tasks.img2img import Img2ImgRequest

from . import compare
from .common import buttons, results, standalone, wire
from .prompting import token_counter
from .controls import SamplingControls, sampling_controls
from .uploads import checked


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


def build(studio: Service) -> Img2ImgTab:
    with gr.Row():
        with gr.Column(scale=2):
            image = checked(gr.Image(label="Input image", type="filepath", image_mode="RGB", height=320,
                                     elem_id="i2i-input"), studio.limits)
            prompt = gr.Textbox(label="Prompt (what it should become)", lines=2, elem_id="i2i-prompt",
                                placeholder="a blue square left of a green circle")
            tokens = gr.Column()                          # the token counter, once the model dropdown exists
            negative = gr.Textbox(label="Negative prompt", lines=1)
            strength = gr.Slider(0, 1, value=0.75, step=0.05, elem_id="i2i-strength",
                                 label="Strength (0 = the input unchanged, 1 = ignore it)")
            generate, stop = buttons("i2i", "Redraw")
            controls = sampling_controls(studio, "img2img", size=False)
        with gr.Column(scale=3):
            shown = results("i2i")
            slider = compare.before_after("i2i-compare")
    inputs = {"image": image, "prompt": prompt, "negative_prompt": negative, "strength": strength,
              **controls.inputs()}
    compare.follow(shown.gallery, image, slider)
    wire(studio, generate, stop, inputs, lambda values: Img2ImgRequest(**values), shown)
    controls.follow_model(studio, "img2img")
    with tokens:
        token_counter(studio, "img2img", prompt, controls.model)
    return Img2ImgTab(image, prompt, negative, strength, controls, shown.gallery)


if __name__ == "__main__":
    standalone(build, "Image → Image")
