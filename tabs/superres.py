"""Super-resolution tab: upload, 4x, the result beside the input."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ldm_core.service import Service
from ldm_core.tasks.superres import DEFAULT_BACK_PROJECTION, SuperResRequest

from . import compare
from .common import buttons, results, standalone, wire
from .controls import model_defaults, sampler_choices, speedup_controls
from .uploads import checked


@dataclass
class SuperResTab:
    image: gr.Image
    steps: gr.Slider
    seed: gr.Number
    model: gr.Dropdown
    gallery: gr.Image
    back_projection: gr.Slider
    average: gr.Slider
    speedups: gr.CheckboxGroup

    @property
    def image_input(self):
        """What "send to" fills."""
        return self.image

    def params(self) -> dict:
        """The controls a result's info fills in (PNG info's "send to"), by info key."""
        return {"steps": self.steps, "seed": self.seed, "model": self.model, "back_projection": self.back_projection,
                "average": self.average, "speedups": self.speedups}


def build(studio: Service) -> SuperResTab:
    entry = studio.entry("superres")
    lim = studio.limits
    with gr.Row():
        with gr.Column():
            image = checked(gr.Image(label="Low-resolution input", type="filepath", image_mode="RGB", height=320,
                                     elem_id="sr-input"), lim, lim.max_superres_input_pixels)
            model = gr.Dropdown(studio.choices("superres"), value=entry.name, label="Model")
            with gr.Row():
                steps = gr.Slider(1, 100, value=entry.steps, step=1, label="Steps")
                seed = gr.Number(-1, precision=0, label="Seed (-1 = random)", minimum=-1)
                sampler = gr.Dropdown(sampler_choices(studio, entry), value=entry.sampler, label="Sampler")
            with gr.Accordion("Advanced", open=False):
                back_projection = gr.Slider(0, lim.max_back_projection, value=DEFAULT_BACK_PROJECTION, step=1,
                                            label="Back-projection onto the input (iterations; 0 = off, as diffusers)",
                                            elem_id="sr-back-projection")
                average = gr.Slider(1, lim.max_average, value=entry.average, step=1,
                                    label="Samples averaged per image (1 = one sample, as diffusers)",
                                    elem_id="sr-average")
            speedups = speedup_controls(entry, "sr-speedups")
            generate, stop = buttons("sr", "Upscale 4×")
        with gr.Column():
            shown = results("sr", single=True, preview_height=120)
            slider = compare.before_after("sr-compare")
    inputs = {"image": image, "steps": steps, "seed": seed, "sampler": sampler, "model": model,
              "back_projection": back_projection, "average": average, "speedups": speedups}
    compare.follow(shown.gallery, image, slider)
    wire(studio, generate, stop, inputs, lambda values: SuperResRequest(**values), shown)
    targets = {"steps": steps, "sampler": sampler, "average": average, "speedups": speedups}
    model.change(lambda name: model_defaults(studio, "superres", name, targets), model, list(targets.values()),
                 api_visibility="private")
    return SuperResTab(image, steps, seed, model, shown.gallery, back_projection, average, speedups)


if __name__ == "__main__":
    standalone(build, "Super-resolution")
