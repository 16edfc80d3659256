"""Text -> Image tab, with a box editor for regional prompts (a prompt of its own for each box drawn)."""
from __future__ import annotations

import json
from dataclasses import dataclass

import gradio as gr
import numpy as np
from gradio_image_annotation import image_annotator

from ldm_core.pipelines.regional import MAX_REGIONS
from ldm_core.requests import RequestError
from ldm_core.data.shapes import COLORS, RELATIONS, SHAPES
from ldm_core.service import Service
from ldm_core.tasks import TASKS
from ldm_core.tasks.text2img import Region, Text2ImgRequest

from .common import Form, Panel, buttons, merged, results, standalone, wire
from .controls import SamplingControls, first_image, sampling_controls, selected_image
from .panels import add_panels
from .prompting import token_counter

EXAMPLES = ["a red circle left of a blue square", "a yellow triangle", "a green diamond above a magenta circle",
            "a cyan square, a red triangle and a blue circle"]
CANVAS = 384    # px: the regions canvas stands for the whole image (a box is a fraction of it)
REGION_HEX = ["#2846dc", "#dc2828", "#28aa3c", "#e6c81e", "#c832be", "#1eb4c8", "#e67e22", "#8e44ad"]
REGIONS_HELP = ("**Draw** a box: drag on the canvas (the **Draw** tool, key **C**), type **what it shows** in the "
                "dialog and press **OK**. Inside the box its prompt guides the image; the prompt above guides the "
                "rest. **Change or delete** a box: the **Select** tool (key **D**), click the box, then "
                "**double-click** it to edit its prompt or press **Delete**. "
                f"Up to {MAX_REGIONS} boxes; the canvas stands for the whole image, whatever its width and height. "
                "Each box costs one more UNet pass a step.")
REGIONS_CSS = ("#t2i-regions-canvas button[aria-label^='Rotate'] { display: none !important; }\n"
               "#t2i-regions-json .cm-gutters { display: none !important; }\n")


def _canvas() -> np.ndarray:
    return np.full((CANVAS, CANVAS, 3), 255, np.uint8)


def _boxes(value: dict | None) -> tuple[list[dict], int, int]:
    """The annotator's boxes (pixels) and its canvas's width and height."""
    if not value or not value.get("boxes"):
        return [], CANVAS, CANVAS
    img = value.get("image")
    h, w = img.shape[:2] if isinstance(img, np.ndarray) else (CANVAS, CANVAS)
    return value["boxes"], w, h


def _fractions(b: dict, w: int, h: int) -> tuple[float, float, float, float]:
    x0, x1 = sorted((b["xmin"] / w, b["xmax"] / w))
    y0, y1 = sorted((b["ymin"] / h, b["ymax"] / h))
    return tuple(round(min(1.0, max(0.0, v)), 4) for v in (x0, y0, x1, y1))


def annotation_to_regions(value: dict | None) -> list[Region]:
    """The boxes drawn (pixels of the canvas) as regions (fractions of the image), each with its prompt."""
    boxes, w, h = _boxes(value)
    out = []
    for i, b in enumerate(boxes, 1):
        prompt = (b.get("label") or "").strip()
        if not prompt:
            raise RequestError(f"regional prompts: box {i} has no prompt: choose the Select tool under the canvas "
                               "and double-click the box to type what it shows")
        out.append(Region(prompt, _fractions(b, w, h)))
    return out


def regions_text(value: dict | None) -> str:
    """The boxes as the API's `regions` takes them, one a line (a box without a prompt shows an empty one)."""
    boxes, w, h = _boxes(value)
    rows = [json.dumps({"prompt": (b.get("label") or "").strip(), "box": list(_fractions(b, w, h))}) for b in boxes]
    return "[\n  " + ",\n  ".join(rows) + "\n]" if rows else "[]"


def _rgb(hex_colour: str) -> str:
    """'#2846dc' -> 'rgb(40, 70, 220)': the colour form the annotator reads back (a tuple fails its preprocess)."""
    return "rgb({}, {}, {})".format(*(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)))


def regions_to_annotation(regions: list[dict] | None) -> dict:
    """A result's regions (its info) as the box editor shows them: on a blank canvas, coloured in turn."""
    return {"image": _canvas(), "boxes": [
        {"xmin": r["box"][0] * CANVAS, "ymin": r["box"][1] * CANVAS, "xmax": r["box"][2] * CANVAS,
         "ymax": r["box"][3] * CANVAS, "label": r["prompt"], "color": _rgb(REGION_HEX[i % len(REGION_HEX)])}
        for i, r in enumerate(regions or [])]}


def regions_editor() -> image_annotator:
    """The Regional prompts accordion: the box editor, and the regions as the API takes them."""
    with gr.Accordion("Regional prompts: a prompt of its own for each box you draw", open=False,
                      elem_id="t2i-regions"):
        gr.Markdown(REGIONS_HELP, elem_id="t2i-regions-help")
        editor = image_annotator({"image": _canvas(), "boxes": []}, label_list=[], label_colors=[], sources=[],
                                 image_type="numpy", height=CANVAS, width=CANVAS, label="Regions", show_label=False,
                                 show_clear_button=False, show_remove_button=True, show_download_button=False,
                                 show_share_button=False, use_default_label=False, enable_keyboard_shortcuts=True,
                                 elem_id="t2i-regions-canvas")
        shown = gr.Code("[]", label="Regions (as the API takes them)", language="json", interactive=False, lines=2,
                        show_line_numbers=False, wrap_lines=True, elem_id="t2i-regions-json")
        gr.HTML("", head=f"<style>{REGIONS_CSS}</style>", padding=False, container=False)
    editor.change(regions_text, editor, shown, api_visibility="private", show_progress="hidden", queue=False)
    return editor


@dataclass
class Text2ImgTab:
    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    controls: SamplingControls
    regions: image_annotator      # the regional prompts' box editor
    gallery: gr.Gallery
    selected: gr.State
    send: dict[str, gr.Button]    # task -> its "send to" button (every task that takes an image)
    panels: dict[str, Panel]      # composition -> its panel (hires, the x/y plot)

    @property
    def convert(self) -> dict:
        """info value -> control value, where they differ."""
        return {"regions": regions_to_annotation, **merged(self.panels).convert}

    def params(self) -> dict:
        """The controls a result's info fills in (PNG info's "send to"), by info key."""
        return {"prompt": self.prompt, "negative_prompt": self.negative_prompt, **self.controls.params(),
                "regions": self.regions, **merged(self.panels).controls}


def what_it_draws(entry) -> str:
    """What a built-in model can draw (it knows only the words of Shapes World); nothing for the others."""
    if entry.is_hub or entry.source.startswith("zoo:"):
        return ""
    return (f"**This built-in model draws Shapes World**: one to three shapes — "
            f"{', '.join(SHAPES)} — in {', '.join(COLORS)}, placed {', '.join(RELATIONS)} one another, on white. "
            "Other words are unknown to it; a hub model (Model, below) reads any text.")


def make_request(values: dict) -> Text2ImgRequest:
    """The request from the tab's named inputs: the regions drawn on the box editor."""
    return Text2ImgRequest(**{**values, "regions": annotation_to_regions(values.get("regions"))})


def build(studio: Service) -> Text2ImgTab:
    with gr.Row(elem_id="t2i-row"):
        with gr.Column(scale=2, elem_id="t2i-left"):
            prompt = gr.Textbox(label="Prompt", lines=2, placeholder="a red circle left of a blue square",
                                elem_id="t2i-prompt")
            tokens = gr.Column(elem_id="t2i-tokens-slot")      # the token counter, once the model dropdown exists
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
            regions = regions_editor()
            form = Form("text2img", {"prompt": prompt, "negative_prompt": negative, **controls.inputs(),
                                     "regions": regions}, make_request, shown, stop)
            panels = add_panels(studio, form)
            gr.Examples(EXAMPLES, inputs=[prompt])
            knows = gr.Markdown(what_it_draws(studio.entry("text2img")), elem_id="t2i-knows")
    selected = gr.State(None)
    wire(studio, generate, stop, form.inputs, make_request, shown)
    controls.follow_model(studio, "text2img")
    controls.model.change(lambda name: what_it_draws(studio.entry("text2img", name)), controls.model, knows,
                          api_visibility="private", show_progress="hidden")
    with tokens:
        token_counter(studio, "text2img", prompt, controls.model)
    shown.gallery.select(selected_image, shown.gallery, selected, api_visibility="private")
    shown.gallery.change(first_image, shown.gallery, selected, api_visibility="private")
    return Text2ImgTab(prompt, negative, controls, regions, shown.gallery, selected, send, panels)


if __name__ == "__main__":
    standalone(build, "Text → Image")
