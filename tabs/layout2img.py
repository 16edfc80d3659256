"""Layout -> Image tab: draw boxes with the mouse, type a label for each, add a caption."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import gradio as gr
import numpy as np
from gradio_image_annotation import image_annotator

from ldm_core.data.shapes import COLORS, SHAPES
from ldm_core.grounding import parse_label
from ldm_core.requests import RequestError
from ldm_core.service import Service
from ldm_core.tasks.layout2img import Box, Layout2ImgRequest, label_error, label_names, takes_caption

from .common import Form, Panel, buttons, merged, results, standalone, wire
from .controls import SamplingControls, sampling_controls
from .panels import add_panels

CANVAS = 512  # drawing canvas, pixels; boxes are normalised by it
LABELS = [f"{c} {s}" for c in COLORS for s in SHAPES]
PALETTE_HEX = {"red": "#dc2828", "yellow": "#e6c81e", "green": "#28aa3c", "cyan": "#1eb4c8", "blue": "#2846dc",
               "magenta": "#c832be"}
NO_COLOUR_HEX = "#888888"   # a box with no label yet, or one whose label names no colour
CLASS_HEX = [*PALETTE_HEX.values(), "#e67e22", "#8e44ad", "#16a085", "#7f5539"]   # a class list's colours, in turn
# A blank first choice (hidden by CSS) makes a new box start unlabelled and grey, not silently "red circle".
CHOICES = ["", *LABELS]
# Built-in models (grounding maps, ldm_core.grounding) know these words; hub GLIGEN models take free text.
VOCABULARY_PIPELINES = ("Layout2ImgPipeline",)
VOCABULARY = (f"a colour ({', '.join(COLORS)}) and/or a shape ({', '.join(SHAPES)}), "
              f"e.g. `blue square` or `circle`")
HELP = ("**Draw** a box: drag on the canvas with the **Draw** tool (key **C**), then type or pick its label in the "
        "dialog and press **OK**. A box takes its label's colour; grey means no label yet.  \n"
        "**Move, resize, relabel or delete** a box: choose the **Select** tool (key **D**) under the canvas and click "
        "the box; then drag it or its corners, **double-click** it (or press **E**) to change its label, or press "
        "**Delete** (or the **Delete** button) to remove it. Back to drawing: the **Draw** tool.  \n"
        f"**Labels the built-in model knows:** {VOCABULARY}. Up to 8 boxes; the caption is optional.")
# A model with a class list (the paper's OpenImages model) offers its classes in the label dialog instead.
HELP_CLASSES = ("**Labels this model knows:** the {n} classes it was trained on, offered in the label dialog: type to "
                "search the list (e.g. `Person`, `Car`, `Tree`; `Man`, `Woman`, `Boy`, `Girl` are `Person` to it). "
                "Up to 8 boxes; it reads no caption and takes no guidance.")
# CSS (build() puts it in the page) hides the rotate buttons (they turn only the boxes on a blank canvas) and
# the blank first choice, and gives the bare tool icons a word each. No gutter in the boxes panel.
_TOOLS = {"Create box": "Draw (C)", "Drag boxes": "Select (D)", "Remove box": "Delete (Del)", "Edit label": "Label"}
CSS = ("#layout-canvas button[aria-label^='Rotate'] { display: none !important; }\n"
       "#model-box-edit li[data-index='0'] { display: none !important; }\n"
       "#layout-boxes .cm-gutters { display: none !important; }\n"
       "#layout-canvas .canvas-control button { width: auto !important; display: inline-flex; align-items: center; "
       "gap: 4px; margin: var(--spacing-lg) var(--spacing-md); }\n"
       "#layout-canvas .canvas-control button svg { width: 20px; height: 20px; flex: none; }\n"
       + "".join(f"#layout-canvas .canvas-control button[aria-label='{k}']::after {{ content: '{v}'; "
                 "font-size: var(--text-sm); white-space: nowrap; }\n" for k, v in _TOOLS.items()))


def blank_canvas() -> np.ndarray:
    return np.full((CANVAS, CANVAS, 3), 255, np.uint8)


def label_hex(label: str | None, names: list[str] | tuple[str, ...] = ()) -> str:
    """A label's colour: with a model's class list `names`, the palette's colour at the class's place (grey
    when it is none of them); else its colour word's (the first one), else grey."""
    if names:
        lower = [n.lower() for n in names]
        key = (label or "").strip().lower()
        return CLASS_HEX[lower.index(key) % len(CLASS_HEX)] if key in lower else NO_COLOUR_HEX
    for word in re.findall(r"[a-z]+", (label or "").lower()):
        if word in PALETTE_HEX:
            return PALETTE_HEX[word]
    return NO_COLOUR_HEX


def _where(b: dict, w: float, h: float) -> str:
    """'the box at the top left (x 102-250, y 40-180 of 512)': how a message points at a box."""
    x0, x1 = sorted((b["xmin"], b["xmax"]))
    y0, y1 = sorted((b["ymin"], b["ymax"]))
    cx, cy = (x0 + x1) / 2 / w, (y0 + y1) / 2 / h
    row = "top" if cy < 1 / 3 else "bottom" if cy > 2 / 3 else "middle"
    col = "left" if cx < 1 / 3 else "right" if cx > 2 / 3 else "centre"
    place = "centre" if (row, col) == ("middle", "centre") else f"{row} {col}"
    return f"the box at the {place} (x {x0:.0f}–{x1:.0f}, y {y0:.0f}–{y1:.0f})"


def _size(value: dict) -> tuple[int, int]:
    img = value.get("image")
    return img.shape[:2] if isinstance(img, np.ndarray) else (CANVAS, CANVAS)


def annotation_to_boxes(value: dict | None) -> list[Box]:
    """Annotator boxes (pixels on the canvas) -> normalised, labelled boxes."""
    if not value or not value.get("boxes"):
        return []
    h, w = _size(value)
    out = []
    for b in value["boxes"]:
        label = (b.get("label") or "").strip()
        if not label:
            raise RequestError(f"{_where(b, w, h)} has no label (it is grey): choose the Select tool under the "
                               "canvas and double-click the box to give it one, e.g. 'red circle'")
        x0, x1 = sorted((b["xmin"] / w, b["xmax"] / w))
        y0, y1 = sorted((b["ymin"] / h, b["ymax"] / h))
        out.append(Box(label, tuple(min(1.0, max(0.0, v)) for v in (x0, y0, x1, y1))))
    return out


def unknown_labels(value: dict | None, entry) -> str | None:
    """Why the model cannot draw these boxes' labels (None: it can, or the model reads free text)."""
    if entry is None or not value or not value.get("boxes"):
        return None
    h, w = _size(value)
    for b in value["boxes"]:
        label = (b.get("label") or "").strip()
        why = label_error(label, entry) if label else None
        if why:
            return (f"{_where(b, w, h)}: {why} Choose the Select tool under the canvas and double-click the box "
                    "to change its label")
        if not label or entry.pipeline not in VOCABULARY_PIPELINES:
            continue
        try:
            parse_label(label)
        except ValueError:
            return (f"{_where(b, w, h)} is labelled '{label}', which this model does not know: it knows "
                    f"{VOCABULARY.replace('`', chr(39))}. Choose the Select tool under the canvas and double-click "
                    "the box to change its label")
    return None


def boxes_to_annotation(boxes: list[dict]) -> dict:
    return {"image": blank_canvas(), "boxes": [
        {"xmin": b["box"][0] * CANVAS, "ymin": b["box"][1] * CANVAS, "xmax": b["box"][2] * CANVAS,
         "ymax": b["box"][3] * CANVAS, "label": b["label"], "color": _rgb(label_hex(b["label"]))} for b in boxes]}


def _rgb(hex_colour: str) -> str:
    """'#dc2828' -> 'rgb(220, 40, 40)', the one colour form the annotator both draws and reads back."""
    return "rgb({}, {}, {})".format(*(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)))


def _rgb_tuple(colour) -> tuple:    # as the annotator hands it (a tuple) or as we set it (a string)
    return tuple(int(v) for v in re.findall(r"\d+", colour)) if isinstance(colour, str) else tuple(colour or ())


def boxes_text(value: dict | None) -> str:
    """The boxes as the API takes them, one box a line; an unlabelled box shows its empty label."""
    if not value or not value.get("boxes"):
        return "[]"
    h, w = _size(value)
    rows = []
    for b in value["boxes"]:
        x0, x1 = sorted((b["xmin"] / w, b["xmax"] / w))
        y0, y1 = sorted((b["ymin"] / h, b["ymax"] / h))
        rows.append(json.dumps({"label": (b.get("label") or "").strip(),
                                "box": [round(min(1.0, max(0.0, v)), 4) for v in (x0, y0, x1, y1)]}))
    return "[\n  " + ",\n  ".join(rows) + "\n]"


def recoloured(value: dict | None, names: list[str] | tuple[str, ...] = ()) -> dict | None:
    """The annotation with every box in its label's colour, or None when they all are already. (The
    annotator colours a box by a picked label but keeps the old colour for a typed one.)"""
    if not value or not value.get("boxes"):
        return None
    boxes = [{**b, "color": _rgb(label_hex(b.get("label"), names))} for b in value["boxes"]]
    if all(_rgb_tuple(b.get("color")) == _rgb_tuple(n["color"]) for b, n in zip(value["boxes"], boxes)):
        return None
    return {"image": value["image"], "boxes": boxes, "orientation": 0}


@dataclass
class Layout2ImgTab:
    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    annotator: image_annotator
    controls: SamplingControls
    gallery: gr.Gallery
    panels: dict[str, Panel]      # composition -> its panel (hires)

    @property
    def convert(self) -> dict:
        """info value -> control value, where they differ."""
        return {"boxes": boxes_to_annotation, **merged(self.panels).convert}

    def params(self) -> dict:
        """The controls a result's info fills in (PNG info's "send to"), by info key."""
        return {"prompt": self.prompt, "negative_prompt": self.negative_prompt, "boxes": self.annotator,
                **self.controls.params(), **merged(self.panels).controls}


def _entry(studio: Service, model: str | None):
    try:
        return studio.entry("layout2img", model or None)
    except Exception:  # an unknown name: the request's own check says so
        return None


def model_classes(studio: Service, model: str | None) -> list[str]:
    """The model's class names as the label dialog lists them (alphabetical); [] for free-text labels."""
    entry = _entry(studio, model)
    return sorted(label_names(entry), key=str.lower) if entry is not None else []


def follow_labels(studio: Service, value: dict | None, model: str | None):
    """A new model: its class list in the label dialog (the built-in words for the others) and the boxes in
    its colours, its help line, guidance only where it was trained for it, the caption only where it reads one."""
    entry = _entry(studio, model)
    names = model_classes(studio, model)
    choices = ["", *names] if names else CHOICES
    colours = [label_hex(c, names) if names else label_hex(c) for c in choices]
    text = HELP.split("**Labels the built-in")[0] + HELP_CLASSES.format(n=len(names)) if names else HELP
    guided = entry is None or entry.guided
    caption = entry is None or takes_caption(entry)
    fixed = recoloured(value, names)      # now, not at the next edit (that update would cut a drag short)
    boxes = {} if fixed is None else {"value": fixed}
    return (gr.update(label_list=choices, label_colors=colours, **boxes), gr.update(value=text),
            gr.update(interactive=guided, info="" if guided else "this model was trained without guidance"),
            *[gr.update(interactive=True, placeholder="") if caption else
              gr.update(interactive=False, value="", placeholder="this model reads no caption")] * 2)


def layout_problem(studio: Service, annotation: dict | None, model: str | None) -> str | None:
    """What stops these boxes from being drawn, in words for the user (None: nothing)."""
    try:
        annotation_to_boxes(annotation)
    except RequestError as e:
        return str(e)
    return unknown_labels(annotation, _entry(studio, model))


def _canvas():
    """The drawing canvas with its help line, status line and boxes panel."""
    help_line = gr.Markdown(HELP, elem_id="layout-help")
    annotator = image_annotator({"image": blank_canvas(), "boxes": []}, label_list=CHOICES,
                                label_colors=[label_hex(lab) for lab in CHOICES],
                                sources=[], image_type="numpy", height=CANVAS, width=CANVAS,
                                label="Layout", show_label=False, show_clear_button=False,
                                show_remove_button=True, show_download_button=False,
                                show_share_button=False, use_default_label=False,
                                enable_keyboard_shortcuts=True, elem_id="layout-canvas")
    status = gr.Markdown("No boxes yet: drag on the canvas to draw one.", elem_id="layout-status")
    boxes_json = gr.Code("[]", label="Boxes (normalised, as the API takes them)", language="json",
                         interactive=False, lines=3, show_line_numbers=False, wrap_lines=True,
                         elem_id="layout-boxes")
    # the tab brings its CSS into the page's <head> itself: webui.py's CSS does not need it
    gr.HTML("", head=f"<style>{CSS}</style>", js_on_load=None, padding=False, container=False)
    return annotator, status, boxes_json, help_line


def status_text(studio: Service, value, model) -> str:
    n = len((value or {}).get("boxes") or [])
    if not n:
        return "No boxes yet: drag on the canvas to draw one."
    problem = layout_problem(studio, value, model)
    return f"**Not ready:** {problem}." if problem else f"{n} box{'es' * (n > 1)}, ready to generate."


def make_request(values: dict) -> Layout2ImgRequest:
    """The request from the tab's named inputs: the boxes drawn on the annotator."""
    boxes = annotation_to_boxes(values.pop("boxes"))
    return Layout2ImgRequest(boxes=boxes, **values)


def build(studio: Service) -> Layout2ImgTab:
    with gr.Row():
        with gr.Column(scale=3):
            annotator, status, boxes_json, help_line = _canvas()
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Caption (optional)", lines=1, elem_id="layout-prompt")
            negative = gr.Textbox(label="Negative prompt", lines=1)
            generate, stop = buttons("layout")
            shown = results("layout", status_id="layout-progress")   # in sight of Generate; the settings below
            controls = sampling_controls(studio, "layout2img")
            settings = gr.Column()
    with settings:
        form = Form("layout2img", {"prompt": prompt, "negative_prompt": negative, "boxes": annotator,
                                   **controls.inputs()}, make_request, shown, stop)
        panels = add_panels(studio, form)

    def show_boxes(value, model):
        fixed = recoloured(value, model_classes(studio, model))
        return boxes_text(value), status_text(studio, value, model), (gr.skip() if fixed is None else fixed)

    def check(values: dict) -> str | None:
        """Boxes the model cannot draw, refused with what to do before the job is queued."""
        annotation = values["boxes"]
        return layout_problem(studio, annotation, values["model"]) if isinstance(annotation, dict) else None

    # a typed label keeps the box's old colour in the annotator: the server sends it back in its label's colour
    annotator.change(show_boxes, [annotator, controls.model], [boxes_json, status, annotator],
                     api_visibility="private", show_progress="hidden", queue=False)
    wire(studio, generate, stop, form.inputs, make_request, shown, check=check)
    controls.follow_model(studio, "layout2img")
    controls.model.change(lambda v, m: follow_labels(studio, v, m), [annotator, controls.model],
                          [annotator, help_line, controls.guidance_scale, prompt, negative], api_visibility="private")
    controls.model.change(lambda v, m: status_text(studio, v, m), [annotator, controls.model], status,
                          api_visibility="private", show_progress="hidden")
    return Layout2ImgTab(prompt, negative, annotator, controls, shown.gallery, panels)


if __name__ == "__main__":
    standalone(build, "Layout → Image")
