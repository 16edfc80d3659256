"""Layout -> Image tab: draw boxes with the mouse, type a label for each, add a caption."""
from __future__ import annotations

import json
from dataclasses import dataclass

import gradio as gr
import numpy as np
from gradio_image_annotation import image_annotator

from ldm_core.data.shapes import COLORS, SHAPES
from ldm_core.stack import ModelStack
from ldm_core.tasks.layout2img import Box, Layout2ImgRequest
from ldm_core.validation import RequestError

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
    user_error,
)

CANVAS = 512  # drawing canvas, pixels; boxes are normalised by it
LABELS = [f"{c} {s}" for c in COLORS for s in SHAPES]
PALETTE_HEX = {"red": "#dc2828", "yellow": "#e6c81e", "green": "#28aa3c", "cyan": "#1eb4c8", "blue": "#2846dc",
               "magenta": "#c832be"}


def blank_canvas() -> np.ndarray:
    return np.full((CANVAS, CANVAS, 3), 255, np.uint8)


def annotation_to_boxes(value: dict | None) -> list[Box]:
    """Annotator boxes (pixels on the canvas) -> normalised, labelled boxes."""
    if not value or not value.get("boxes"):
        return []
    img = value.get("image")
    h, w = (img.shape[:2] if isinstance(img, np.ndarray) else (CANVAS, CANVAS))
    out = []
    for i, b in enumerate(value["boxes"], 1):
        label = (b.get("label") or "").strip()
        if not label:
            raise RequestError(f"box {i} has no label: click it and type what it should contain, e.g. 'red circle'")
        x0, x1 = sorted((b["xmin"] / w, b["xmax"] / w))
        y0, y1 = sorted((b["ymin"] / h, b["ymax"] / h))
        out.append(Box(label, tuple(min(1.0, max(0.0, v)) for v in (x0, y0, x1, y1))))
    return out


def boxes_to_annotation(boxes: list[dict]) -> dict:
    return {"image": blank_canvas(), "boxes": [
        {"xmin": b["box"][0] * CANVAS, "ymin": b["box"][1] * CANVAS, "xmax": b["box"][2] * CANVAS,
         "ymax": b["box"][3] * CANVAS, "label": b["label"],
         "color": _rgb(PALETTE_HEX.get(b["label"].split()[0], "#888888"))} for b in boxes]}


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    """'#dc2828' -> (220, 40, 40): the annotator draws a box's colour only as an RGB tuple."""
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


@dataclass
class Layout2ImgTab:
    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    annotator: image_annotator
    controls: SamplingControls
    gallery: gr.Gallery

    convert = {"boxes": boxes_to_annotation}    # info value -> control value

    def params(self) -> dict:
        """The controls a result's info fills in (PNG info's "send to"), by info key."""
        return {"prompt": self.prompt, "negative_prompt": self.negative_prompt, "boxes": self.annotator,
                **self.controls.params()}


def build(studio: Studio) -> Layout2ImgTab:
    with gr.Row():
        with gr.Column(scale=3):
            gr.Markdown("Drag on the canvas to draw a box, then pick or type its label "
                        "(e.g. `red circle`). Up to 8 boxes.")
            annotator = image_annotator({"image": blank_canvas(), "boxes": []}, label_list=LABELS,
                                        label_colors=[PALETTE_HEX[lab.split()[0]] for lab in LABELS],
                                        sources=[], image_type="numpy", height=CANVAS, width=CANVAS,
                                        label="Layout", show_clear_button=False, elem_id="layout-canvas")
            boxes_json = gr.Code(label="Boxes (normalised, as the API takes them)", language="json", interactive=False)
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Caption (optional)", lines=1, elem_id="layout-prompt")
            negative = gr.Textbox(label="Negative prompt", lines=1)
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="layout-generate")
                stop = gr.Button("Stop", variant="stop")
            controls = sampling_controls(studio, "layout2img")
            preview = gr.Image(label="Preview", height=160, interactive=False)
            gallery = gr.Gallery(label="Images", columns=4, height="auto", format="png", elem_id="layout-gallery",
                                 object_fit="contain", interactive=False)
            info = gr.Code(label="Parameters used", language="json")

    def show_boxes(value):
        try:
            return json.dumps([{"label": b.label, "box": [round(v, 4) for v in b.box]}
                               for b in annotation_to_boxes(value)], indent=1)
        except RequestError as e:
            return json.dumps({"error": str(e)})

    @gpu
    def run(prompt, negative_prompt, annotation, steps, guidance_scale, seed, num_images, width, height, sampler,
            model, request: gr.Request, progress=gr.Progress()):
        try:
            boxes = annotation_to_boxes(annotation)
        except RequestError as e:
            raise user_error(e) from None
        req = Layout2ImgRequest(prompt=prompt, boxes=boxes, negative_prompt=negative_prompt, steps=steps,
                                guidance_scale=guidance_scale, seed=seed, num_images=num_images, width=width,
                                height=height, sampler=sampler, model=model)
        yield from run_with_progress(studio, req, progress, request)

    c = controls
    annotator.change(show_boxes, annotator, boxes_json, api_visibility="private")
    ev = generate.click(run, [prompt, negative, annotator, c.steps, c.guidance_scale, c.seed, c.num_images, c.width,
                              c.height, c.sampler, c.model], [gallery, preview, info],
                        concurrency_id=GPU_CONCURRENCY_ID, api_visibility="private",
                        validator=quota(studio, 11))
    stop.click(stopped, None, preview, cancels=[ev], api_visibility="private")
    c.model.change(lambda m: model_defaults(studio, "layout2img", m), c.model,
                   [c.steps, c.guidance_scale, c.sampler, c.width, c.height], api_visibility="private")
    return Layout2ImgTab(prompt, negative, annotator, controls, gallery)


if __name__ == "__main__":
    with gr.Blocks(title="Layout → Image") as demo:
        build(studio(ModelStack.from_catalog()))
    demo.queue().launch()
