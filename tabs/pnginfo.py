"""PNG info tab: read the parameters a studio PNG carries and its invisible watermark, and send
the parameters to their tab."""
from __future__ import annotations

import json
from dataclasses import dataclass

import gradio as gr

from ldm_core.limits import DEFAULT_LIMITS
from ldm_core.provenance import a1111_text, read_parameters, read_watermark
from ldm_core.requests import RequestError, load_image

from .uploads import checked


@dataclass
class PngInfoTab:
    file: gr.File
    params: gr.State
    send: gr.Button


def read(path: str | None):
    """(summary, JSON, parameters, the picture) of a dropped file."""
    if not path:
        return "", "", None, None
    try:
        image = load_image(path, what="PNG")  # size and format checks before trusting it
        params = read_parameters(path)
    except RequestError as e:
        return f"not readable: {e}", "", None, None
    mark = read_watermark(image)
    mark_line = (f"Invisible watermark: made by Latent Diffusion Studio ({mark.matched}/32 bits)" if mark.found
                 else "Invisible watermark: none found")
    if not params:
        return f"this image carries no Latent Diffusion Studio parameters\n{mark_line}", "", None, image
    return f"{a1111_text(params)}\n{mark_line}", json.dumps(params, indent=1), params, image


def build() -> PngInfoTab:
    with gr.Row():
        with gr.Column():
            file = checked(gr.File(label="PNG made by the studio (or any copy of one: the watermark is checked too)",
                                   file_types=[".png", ".jpg", ".jpeg", ".webp"], type="filepath",
                                   elem_id="pnginfo-file"), DEFAULT_LIMITS, in_events=False)
            send = gr.Button("Send to its tab", variant="primary", elem_id="pnginfo-send")
            picture = gr.Image(label="The picture", type="pil", format="png", interactive=False, height=320,
                               elem_id="pnginfo-picture")
        with gr.Column():
            summary = gr.Textbox(label="Parameters", lines=4, interactive=False)
            raw = gr.Code(label="JSON", language="json")
    params = gr.State(None)
    file.change(read, file, [summary, raw, params, picture], api_visibility="private")
    return PngInfoTab(file, params, send)


if __name__ == "__main__":
    with gr.Blocks(title="PNG info") as demo:
        build()
    demo.launch()
