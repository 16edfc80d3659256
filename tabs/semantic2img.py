"""Semantic → Image tab (paper §4.3.2): paint a label map with the mouse, a class at a time in its
colour (the model's palette: Shapes World's 25 labels for the built-in model, COCO-Stuff's 182 for
the paper's landscape models), or upload a label PNG; images of that layout come out, at the
canvas size or larger (sampled convolutionally)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape

import gradio as gr
import numpy as np
from PIL import Image

from ldm_core.catalog import CatalogError
from ldm_core.requests import RequestError
from ldm_core.service import Service
from ldm_core.data.label_maps import PALETTE_RGB, SEMANTIC_CLASSES
from ldm_core.tasks.semantic2img import Semantic2ImgRequest
from ldm_core.zoo.concat import cocostuff_labels, label_palette

from .common import buttons, results, standalone, wire
from .controls import SamplingControls, sampling_controls
from .inpaint import bounded
from .uploads import checked, checked_editor

MAX_SIDE = 1024          # the paper's wide canvases (1024×384)
CELL = "display:inline-block;margin-right:12px;white-space:nowrap;font-size:13px"
SWATCH = "display:inline-block;width:14px;height:14px;border:1px solid #999;margin-right:4px;vertical-align:-2px;"
# the class picked in the list becomes the brush colour in the editor itself (its own swatch, in
# class order), so nothing round-trips through the server and no stroke is lost; each element is
# waited for (a slow page), and the swatches are closed again as a click outside does (they cover
# the canvas)
PICK_JS = """(i) => { const ed = document.querySelector('#s2i-editor'); if (!ed || i === null) return i;
  ed.dataset.picked = '';    // set to the class once its colour is the brush's and the swatches are shut
  const q = (s) => ed.querySelector(s);
  const until = (ok, then, n = 80) => ok() ? then() : n > 0 && setTimeout(() => until(ok, then, n - 1), 50);
  const swatches = () => ed.querySelectorAll('menu.swatch button.color');
  q("button[aria-label='Brush']")?.click();
  until(() => q("button[aria-label='Color']"), () => {
    if (!q('menu.swatch')) q("button[aria-label='Color']").click();
    until(() => swatches().length > +i, () => { swatches()[+i].click();
      setTimeout(() => { document.body.dispatchEvent(new MouseEvent('mousedown', {bubbles: true}));
        until(() => !q('menu.swatch'), () => { ed.dataset.picked = i; }); }, 50); });
  }); return i; }"""
SOLID = 128              # a painted pixel counts where the brush's alpha is at least this (no blended edges)


FILL = ("background", "sky-other")    # what a new canvas is filled with, the first a model has


def classes_for(catalog, entry) -> tuple[list[str], list[list[int]] | None]:
    """A semantic model's class names and paint colours: from its rescaler's config (no weights
    read); a zoo model not converted yet has COCO-Stuff's and the converter's palette."""
    cfg = catalog.local_path(entry) / "rescaler" / "config.json"
    if cfg.is_file():
        c = json.loads(cfg.read_text())
        return c.get("class_names") or [str(i) for i in range(c.get("in_channels", 0))], c.get("palette")
    if entry.is_zoo:
        return list(cocostuff_labels()), label_palette(len(cocostuff_labels()))
    return list(SEMANTIC_CLASSES), PALETTE_RGB


def fill_of(names: list[str], palette) -> tuple[int, ...]:
    fill = next((names.index(f) for f in FILL if f in names), 0)
    return tuple(palette[fill]) if palette else (0, 0, 0)


def hex_of(rgb) -> str:
    return "#%02x%02x%02x" % tuple(int(v) for v in rgb)


def blank(width: int, height: int, rgb=(255, 255, 255)) -> dict:
    """A new canvas: the background class's colour at the output size."""
    return {"background": Image.new("RGB", (int(width), int(height)), tuple(rgb)), "layers": [], "composite": None}


def editor_to_map(value) -> Image.Image:
    """The painted canvas as an RGB image of class colours: the background (white, or an uploaded
    map) with every stroke's own colour where the stroke is solid (its anti-aliased edge, a blend of
    two colours that may be nearest to a third class, is left to what was below)."""
    if not value or value.get("background") is None:
        raise RequestError("paint a label map (or upload one)")
    bg = value["background"]
    bg = bg if isinstance(bg, Image.Image) else Image.fromarray(np.asarray(bg))
    out = np.array(bg.convert("RGB"))
    for layer in value.get("layers") or []:
        layer = layer if isinstance(layer, Image.Image) else Image.fromarray(np.asarray(layer))
        if layer.size != bg.size:
            layer = layer.resize(bg.size, Image.NEAREST)
        rgba = np.asarray(layer.convert("RGBA"))
        solid = rgba[..., 3] >= SOLID
        out[solid] = rgba[..., :3][solid]
    return Image.fromarray(out)


def legend(names: list[str], palette) -> str:
    """The classes as colour swatches (what each colour paints)."""
    if not palette:
        return "<p>This model has no paint colours: upload a greyscale PNG of class ids.</p>"
    cells = "".join(f'<span title="{i}: {escape(n)}" style="{CELL}"><i style="{SWATCH}background:{hex_of(c)}">'
                    f"</i>{escape(n)}</span>" for i, (n, c) in enumerate(zip(names, palette)))
    return f'<div style="max-height:130px;overflow-y:auto;line-height:1.9">{cells}</div>'


@dataclass
class Semantic2ImgTab:
    editor: gr.ImageEditor
    paint_class: gr.Dropdown
    upload: gr.File
    controls: SamplingControls
    gallery: gr.Gallery

    def params(self) -> dict:
        """The controls a result's info fills in (PNG info's and History's "reuse"), by info key."""
        return self.controls.params()


def make_request(values: dict) -> Semantic2ImgRequest:
    """The request: an uploaded label PNG if one is given, else the painted canvas."""
    upload, canvas = values.pop("upload"), values.pop("editor")
    values.pop("paint_class", None)
    label_map = upload if upload else editor_to_map(canvas)
    return Semantic2ImgRequest(label_map=label_map, **values)


def _classes(studio: Service, name: str | None):
    try:
        return classes_for(studio.catalog, studio.entry("semantic2img", name))
    except CatalogError:
        return [], None


def brush(names: list[str], palette, current: str | None) -> gr.Brush:
    """Every class's colour as the brush's swatches (fixed: nothing else can be painted), the
    picked class's first."""
    colours = [hex_of(c) for c in palette or [(0, 0, 0)]]
    default = colours[names.index(current)] if palette and current in names else colours[0]
    return gr.Brush(colors=colours, default_color=default, color_mode="fixed", default_size=8)


def class_choices(names: list[str]) -> list[tuple[str, str]]:
    return [(n, str(i)) for i, n in enumerate(names)]


def follow_model(studio: Service, name: str):
    """A new model: its classes to paint with, their legend, and a blank canvas at its size."""
    try:
        entry = studio.entry("semantic2img", name)
    except CatalogError:
        return gr.skip(), gr.skip(), gr.skip()
    names, palette = _classes(studio, name)
    first = names[1] if len(names) > 1 else (names[0] if names else None)
    return (gr.update(choices=class_choices(names), value=str(names.index(first)) if first else None,
                      info=f"{len(names)} classes: type to search"),
            legend(names, palette), gr.update(value=blank(entry.width, entry.height, fill_of(names, palette)),
                                              brush=brush(names, palette, first)))


def build(studio: Service) -> Semantic2ImgTab:
    entry = studio.entry("semantic2img")
    names, palette = classes_for(studio.catalog, entry)
    first = names[1] if len(names) > 1 else names[0]
    fill = fill_of(names, palette)
    with gr.Row():
        with gr.Column(scale=3):
            paint_class = gr.Dropdown(class_choices(names), value=str(names.index(first)), filterable=True,
                                      label="Paint with class (or pick its colour in the editor's palette)",
                                      info=f"{len(names)} classes: type to search", elem_id="s2i-class")
            editor = checked_editor(bounded(gr.ImageEditor(value=blank(entry.width, entry.height, fill),
                                            label="Label map: paint regions, one class at a time", type="pil",
                                            image_mode="RGBA", layers=False, transforms=(), height=420, format="png",
                                            brush=brush(names, palette, first),
                                            elem_id="s2i-editor"), studio.limits), studio.limits)
            legend_box = gr.HTML(legend(names, palette), elem_id="s2i-legend")
            with gr.Row():
                new_canvas = gr.Button("New canvas (the output size)", elem_id="s2i-new-canvas")
                upload = checked(gr.File(label="…or upload a label PNG (class colours, or greyscale class ids)",
                                         file_types=[".png"], type="filepath", elem_id="s2i-upload"), studio.limits)
        with gr.Column(scale=2):
            generate, stop = buttons("s2i")
            controls = sampling_controls(studio, "semantic2img", guidance=False)
            for side in (controls.width, controls.height):
                side.maximum = MAX_SIDE
            shown = results("s2i", columns=2)
    inputs = {"editor": editor, "paint_class": paint_class, "upload": upload,
              **{k: c for k, c in controls.inputs().items() if k != "guidance_scale"}}
    wire(studio, generate, stop, inputs, make_request, shown)
    controls.follow_model(studio, "semantic2img")
    controls.model.change(lambda name: follow_model(studio, name), controls.model, [paint_class, legend_box, editor],
                          api_visibility="private")
    paint_class.select(None, paint_class, None, js=PICK_JS)   # select: also when the same class is picked again
    new_canvas.click(lambda name, w, h: blank(w, h, fill_of(*_classes(studio, name))),
                     [controls.model, controls.width, controls.height], editor, api_visibility="private")
    return Semantic2ImgTab(editor, paint_class, upload, controls, shown.gallery)


if __name__ == "__main__":
    standalone(build, "Semantic → Image")
