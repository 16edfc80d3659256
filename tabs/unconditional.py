"""Unconditional tab (paper §4.2): images from noise alone, from the built-in Shapes World model or
the paper's CelebA-HQ, FFHQ and LSUN models."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ldm_core.service import Service
from ldm_core.tasks.unconditional import UnconditionalRequest

from .common import Form, buttons, results, standalone, wire
from .controls import SamplingControls, model_defaults, sampling_controls
from .panels import add_panels

ETA_INFO = "DDIM only: 0 = deterministic, 1 = as stochastic as DDPM (the paper's scripts use 0 or 1 per model)"


@dataclass
class UnconditionalTab:
    controls: SamplingControls
    eta: gr.Slider
    gallery: gr.Gallery

    def params(self) -> dict:
        """The controls a result's info fills in (PNG info's and History's "reuse"), by info key."""
        return {**self.controls.params(), "eta": self.eta}


def make_request(values: dict) -> UnconditionalRequest:
    return UnconditionalRequest(**values)


def build(studio: Service) -> UnconditionalTab:
    entry = studio.entry("unconditional")
    with gr.Row():
        with gr.Column(scale=2):
            generate, stop = buttons("uncond")
            controls = sampling_controls(studio, "unconditional", guidance=False)
            eta = gr.Slider(0, 1, value=entry.eta, step=0.05, label="DDIM eta", info=ETA_INFO, elem_id="uncond-eta")
            settings = gr.Column()
        with gr.Column(scale=3):
            shown = results("uncond")
    inputs = {**{k: c for k, c in controls.inputs().items() if k != "guidance_scale"}, "eta": eta}
    with settings:
        add_panels(studio, Form("unconditional", inputs, make_request, shown, stop))   # the x/y plot
    wire(studio, generate, stop, inputs, make_request, shown)
    targets = {n: c for n, c in controls.params().items() if n not in ("seed", "model", "guidance_scale")}
    targets["eta"] = eta
    controls.model.change(lambda name: model_defaults(studio, "unconditional", name, targets), controls.model,
                          list(targets.values()), api_visibility="private")
    return UnconditionalTab(controls, eta, shown.gallery)


if __name__ == "__main__":
    standalone(build, "Unconditional")
