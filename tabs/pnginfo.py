"""PNG info tab: read the parameters a studio PNG carries, and send them to their tab."""
from __future__ import annotations

import json
from dataclasses import dataclass

import gradio as gr

from ldm_core.provenance import a1111_text, read_parameters
from ldm_core.requests import RequestError, load_image


@dataclass
class PngInfoTab:
    file: gr.File
    params: gr.State
    send: gr.Button


def read(path: str | None):
    if not path:
        return "", "", None
    try:
        load_image(path, what="PNG")  # size and format checks before trusting it
        params = read_parameters(path)
    except RequestError as e:
        return f"not readable: {e}", "", None
    if not params:
        return "this image carries no Latent Diffusion Studio parameters", "", None
    return a1111_text(params), json.dumps(params, indent=1), params


def build() -> PngInfoTab:
    with gr.Row():
        with gr.Column():
            file = gr.File(label="PNG made by the studio", file_types=[".png"], type="filepath",
                           elem_id="pnginfo-file")
            send = gr.Button("Send to its tab", variant="primary")
        with gr.Column():
            summary = gr.Textbox(label="Parameters", lines=4, interactive=False)
            raw = gr.Code(label="JSON", language="json")
    params = gr.State(None)
    file.change(read, file, [summary, raw, params], api_visibility="private")
    return PngInfoTab(file, params, send)


if __name__ == "__main__":
    with gr.Blocks(title="PNG info") as demo:
        build()
    demo.launch()
