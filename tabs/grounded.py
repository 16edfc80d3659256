"""The layout stage in the text tab (`ldm_core/compositions/grounded.py`): its switch, the boxes it
planned for the last result (drawn over the image, and as the Layout tab takes them), and a button that
sends them to the Layout tab to be edited there.

The composition lists both tasks, so `add_panels` calls `panel` for the text tab (the switch and the
plan) and then for the layout tab, which it wires as the receiving end of the text tab's button.
"""
from __future__ import annotations

import json

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw

from ldm_core.data.shapes import PALETTE
from ldm_core.service import Service

from .common import Form, Panel
from .controls import first_image

CHOICES = [("the model's own", ""), ("on", "on"), ("off", "off")]
SHOWN_SIDE = 256            # px: the planned boxes are drawn over the first image at this size
LAYOUT_CANVAS = 512         # px: the Layout tab's canvas, when its value does not say
NO_COLOUR = "rgb(136, 136, 136)"   # the Layout tab recolours each box by its label when it arrives
_senders: dict[int, tuple] = {}    # id(the page being built) -> the text tab's (button, info) to wire


def panel(studio: Service, form: Form) -> Panel:
    if form.task == "layout2img":
        return receive(form)
    return plan_panel(form)


def plan_panel(form: Form) -> Panel:
    """The switch (the request's `plan_layout`), and the last result's planned boxes with their button."""
    on = gr.Radio(CHOICES, value="", label="Layout stage: plan the caption's boxes, then draw them",
                  info="a learned planner places the objects the caption names; the layout model draws them",
                  elem_id="t2i-plan-layout")
    with gr.Group(visible=False, elem_id="t2i-plan") as group:
        drawn = gr.Image(label="Planned layout (over the first image)", interactive=False, height=SHOWN_SIDE,
                         format="png", elem_id="t2i-plan-image")
        boxes = gr.Code("[]", label="Planned boxes (as the Layout tab and the API take them)", language="json",
                        interactive=False, lines=2, elem_id="t2i-plan-boxes")
        send = gr.Button("Edit these boxes in the Layout tab", size="sm", elem_id="t2i-plan-send")
    form.inputs["plan_layout"] = on
    form.shown.info.change(show_plan, [form.shown.info, form.shown.gallery], [group, drawn, boxes],
                           api_visibility="private", show_progress="hidden")
    _senders[id(gr.context.Context.root_block)] = (send, form.shown.info)
    return Panel({"plan_layout": on}, {})


def planned(info_text: str | None) -> dict | None:
    """A result's info with its planned boxes, or None (no result, or one drawn from the caption alone)."""
    try:
        info = json.loads(info_text or "")
    except json.JSONDecodeError:
        return None
    return info if isinstance(info, dict) and isinstance(info.get("planned_boxes"), list) else None


def show_plan(info_text: str | None, gallery):
    info = planned(info_text)
    if info is None:
        return gr.update(visible=False), None, "[]"
    boxes = info["planned_boxes"]
    rows = ",\n  ".join(json.dumps(b) for b in boxes)
    return gr.update(visible=True), drawn_boxes(first_image(gallery), boxes), f"[\n  {rows}\n]" if rows else "[]"


def drawn_boxes(path: str | None, boxes: list[dict]) -> Image.Image:
    """The image (white where there is none) at SHOWN_SIDE px with each box outlined and labelled."""
    base = Image.open(path).convert("RGB") if path else Image.new("RGB", (64, 64), "white")
    scale = SHOWN_SIDE / max(base.size)
    image = base.resize((round(base.width * scale), round(base.height * scale)), Image.NEAREST)
    pen = ImageDraw.Draw(image)
    for b in boxes:
        x0, y0, x1, y1 = (v * s for v, s in zip(b["box"], (image.width, image.height) * 2))
        words = str(b["label"]).split()
        colour = next((PALETTE[w] for w in words if w in PALETTE), (60, 60, 60))
        pen.rectangle([x0, y0, x1 - 1, y1 - 1], outline=(0, 0, 0), width=3)
        pen.rectangle([x0 + 1, y0 + 1, x1 - 2, y1 - 2], outline=colour, width=1)
        pen.text((x0 + 3, max(0, y0 - 11)), str(b["label"]), fill=(0, 0, 0))
    return image


def as_annotation(info_text: str | None, current: dict | None) -> dict:
    """The planned boxes as the Layout tab's editor holds them, in pixels of its canvas."""
    info = planned(info_text)
    if info is None:
        raise gr.Error("generate an image with the layout stage on first: then its boxes can be edited")
    image = (current or {}).get("image")
    canvas = image if isinstance(image, np.ndarray) else np.full((LAYOUT_CANVAS, LAYOUT_CANVAS, 3), 255, np.uint8)
    h, w = canvas.shape[:2]
    return {"image": np.full_like(canvas, 255), "boxes": [
        {"xmin": b["box"][0] * w, "ymin": b["box"][1] * h, "xmax": b["box"][2] * w, "ymax": b["box"][3] * h,
         "label": b["label"], "color": NO_COLOUR} for b in info["planned_boxes"]]}


def _tabs_of(component) -> gr.Tabs | None:
    block = getattr(component, "parent", None)
    while block is not None and not isinstance(block, gr.Tabs):
        block = getattr(block, "parent", None)
    return block


def receive(form: Form) -> Panel:
    """The layout tab: the text tab's button fills its boxes, caption and model, and brings it up."""
    sender = _senders.pop(id(gr.context.Context.root_block), None)
    if sender is None:         # no text tab on this page
        return Panel({}, {})
    button, info = sender
    annotator, prompt, model = form.inputs["boxes"], form.inputs["prompt"], form.inputs["model"]
    tabs = _tabs_of(annotator)

    def send(info_text, current):
        value = planned(info_text)
        out = [as_annotation(info_text, current), value.get("prompt", ""), value.get("layout_model") or gr.skip()]
        return out + ([gr.Tabs(selected="layout2img")] if tabs is not None else [])

    button.click(send, [info, annotator], [annotator, prompt, model, *([tabs] if tabs is not None else [])],
                 api_visibility="private", show_progress="hidden")
    return Panel({}, {})
