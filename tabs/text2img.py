"""Text -> Image tab."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ldm_core.service import Service
from ldm_core.tasks import TASKS
from ldm_core.tasks.text2img import Text2ImgRequest

from .common import Form, Panel, buttons, merged, results, standalone, wire
from .controls import SamplingControls, first_image, sampling_controls, selected_image
from .panels import add_panels

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
    panels: dict[str, Panel]      # composition -> its panel (hires, the x/y plot)

    @property
    def convert(self) -> dict:
        """info value -> control value, where they differ."""
        return merged(self.panels).convert

    def params(self) -> dict:
        """The controls a result's info fills in (PNG info's "send to"), by info key."""
        return {"prompt": self.prompt, "negative_prompt": self.negative_prompt, **self.controls.params(),
                **merged(self.panels).controls}


def make_request(values: dict) -> Text2ImgRequest:
    return Text2ImgRequest(**values)


def build(studio: Service) -> Text2ImgTab:
    with gr.Row(elem_id="t2i-row"):
        with gr.Column(scale=2, elem_id="t2i-left"):
            prompt = gr.Textbox(label="Prompt", lines=2, placeholder="a red circle left of a blue square",
                                elem_id="t2i-prompt")
            negative = gr.Textbox(label="Negative prompt", lines=1)
            generate, stop = buttons("t2i")
            settings = gr.Column(elem_id="t2i-settings")      # on a phone: below the results (webui.CSS)
        with gr.Column(scale=3, elem_id="t2i-results"):
            shown = results("t2i")
            with gr.Row():
                send = {t.name: gr.Button(f"Send to {t.title.lower()}", size="sm", elem_id=f"t2i-send-{t.name}")
                        for t in map(TASKS.get, studio.tasks) if t.takes_image}
        with settings:
            controls = sampling_controls(studio, "text2img")
            form = Form("text2img", {"prompt": prompt, "negative_prompt": negative, **controls.inputs()},
                        make_request, shown, stop)
            panels = add_panels(studio, form)
            gr.Examples(EXAMPLES, inputs=[prompt])
    selected = gr.State(None)
    wire(studio, generate, stop, form.inputs, make_request, shown)
    controls.follow_model(studio, "text2img")
    shown.gallery.select(selected_image, shown.gallery, selected, api_visibility="private")
    shown.gallery.change(first_image, shown.gallery, selected, api_visibility="private")
    return Text2ImgTab(prompt, negative, controls, shown.gallery, selected, send, panels)


if __name__ == "__main__":
    standalone(build, "Text → Image")
