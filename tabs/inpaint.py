"""Inpainting tab: paint the region to repaint over the image (gr.ImageEditor)."""
from __future__ import annotations

import io
import os
from dataclasses import dataclass

import gradio as gr
import numpy as np
from gradio.components.base import server
from PIL import Image, ImageDraw

from ldm_core.catalog import CatalogError
from ldm_core.limits import Limits
from ldm_core.options import MASK_DOWNSAMPLING
from ldm_core.requests import RequestError
from ldm_core.service import Service
from ldm_core.tasks.inpaint import MAX_MASK_BLUR, SIDES, InpaintRequest
from ldm_core.tasks.inpaint import extend as extend_canvas
from server.errors import refuse

from . import compare
from .common import buttons, results, standalone, wire
from .controls import SamplingControls, sampling_controls
from .prompting import token_counter
from .uploads import checked_editor

# the painted mask shows as a translucent dark shade: visible on white and over every colour of
# Shapes World (a white brush could not be seen on its white canvas); what counts is where it is
BRUSH = ("#202020", 0.55)
MAX_EDITOR_LAYERS = 2   # the editor is built with layers=False: one drawing layer (and room for one more)
MAX_EDITOR_SESSIONS = 64  # editor values uploaded in pieces (accept_blobs) held at once
NO_PROMPT = "this model takes no prompt: it fills the mask from the rest of the image"
# the editor's tool palette floats over the left of its canvas: the canvas starts right of it, so that
# the picture (fitted to the canvas) is never under the palette, on a phone (390 px) as on a desktop
CSS = ("#inpaint-editor .pixi-target, #inpaint-editor .pixi-target-crop { left: 44px !important; "
       "width: calc(100% - 44px) !important; }\n"
       "#inpaint-outpaint-preview img { image-rendering: pixelated; }\n")
NEW_AREA = (255, 0, 200)      # the outpainting preview's stripes over the area to be added
PREVIEW_MIN_SIDE = 256        # a 64 px picture is drawn larger (nearest) in the preview
OUTPAINT_PROMPT = ("The prompt describes the **whole** picture, what is there and what is new: the built-in model "
                   "reads it as the picture's caption. Beside a red circle and a blue square, *a red circle* is "
                   "already true, so the new area often stays empty; write *a red circle, a blue square and a red "
                   "circle* (or leave the prompt empty to continue the picture).")
NOT_RECORDED = ("a result's source image and mask are not stored with it: the editor shows the result itself; "
                "paint the region to repaint again")


def _check_image(f, what: str, limits: Limits) -> None:
    """An uploaded file (FileData) or blob (bytes) within the upload bytes and pixels, read from
    its header, before anything decodes it."""
    if f is None:
        return
    data = f if isinstance(f, (bytes, bytearray, memoryview)) else None
    size = len(data) if data is not None else os.path.getsize(f.path)
    if size > limits.max_upload_bytes:
        raise refuse(f"{what} is {size / 1e6:.1f} MB; the limit is {limits.max_upload_bytes / 1e6:g} MB")
    try:
        with Image.open(io.BytesIO(data) if data is not None else f.path) as im:   # reads the header only
            w, h = im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise refuse(f"{what} has too many pixels; the limit is {limits.max_input_pixels}") from None
    except Exception:
        raise refuse(f"{what} is not an image PIL can read, or is too large") from None
    if w * h > limits.max_input_pixels:
        raise refuse(f"{what} is {w}x{h} = {w * h} pixels; the limit is {limits.max_input_pixels}")


def bounded(editor: gr.ImageEditor, limits: Limits) -> gr.ImageEditor:
    """`editor`, made to check what it is sent before any of it is decoded: at most
    MAX_EDITOR_LAYERS layers, every image within the upload bytes and pixels, and a bounded number
    of pending piecewise uploads (Gradio's `accept_blobs` route). Gradio decodes every layer of an
    editor value otherwise, however many there are. (Its own methods are wrapped on the instance: a
    subclass would make Gradio write a .pyi stub beside this file at import time.)"""
    decode, accept = editor.preprocess, editor.accept_blobs

    def preprocess(payload):
        if payload is None:
            return None
        source = editor.blob_storage.get(payload.id) if payload.id is not None else payload
        if source is not None:
            layers = source.layers or []
            if len(layers) > MAX_EDITOR_LAYERS:
                editor.blob_storage.pop(payload.id, None)
                raise refuse(f"the editor sent {len(layers)} layers; at most {MAX_EDITOR_LAYERS} are accepted")
            for i, f in enumerate([source.background, source.composite, *layers]):
                _check_image(f, "the image" if i == 0 else "the painted mask", limits)
        return decode(payload)

    @server
    def accept_blobs(data):
        index = data.data.get("index")
        if data.data.get("type") not in ("layer", "background", "composite"):
            raise refuse("unknown editor part")
        if index not in (None, "", "null") and not (str(index).isdigit() and int(index) < MAX_EDITOR_LAYERS):
            raise refuse(f"at most {MAX_EDITOR_LAYERS} editor layers are accepted")
        for _, blob in data.files:
            _check_image(blob, "an editor layer", limits)
        while len(editor.blob_storage) >= MAX_EDITOR_SESSIONS and data.data.get("id") not in editor.blob_storage:
            editor.blob_storage.pop(next(iter(editor.blob_storage)))     # the oldest pending upload goes
        return accept(data)

    editor.preprocess, editor.accept_blobs = preprocess, accept_blobs
    return editor


def editor_to_image_and_mask(value, outpainting: bool = False) -> tuple[Image.Image, Image.Image | None]:
    """ImageEditor value -> (RGB image, "L" mask: white wherever any layer was painted); no paint
    is a mask of None when `outpainting` (the new area is the mask), else an error."""
    if not value or value.get("background") is None:
        raise RequestError("upload an image to inpaint")
    bg = value["background"]
    bg = bg if isinstance(bg, Image.Image) else Image.fromarray(np.asarray(bg))
    mask = np.zeros((bg.height, bg.width), bool)
    for layer in value.get("layers") or []:
        layer = layer if isinstance(layer, Image.Image) else Image.fromarray(np.asarray(layer))
        if layer.size != bg.size:
            layer = layer.resize(bg.size, Image.NEAREST)
        a = np.asarray(layer.convert("RGBA"))[..., 3]
        mask |= a > 0
    if not mask.any() and not outpainting:
        raise RequestError("paint over the region to repaint (the brush on the image editor), or extend the "
                           "canvas under Outpainting")
    rgb = bg.convert("RGBA")
    white = Image.new("RGBA", rgb.size, (255, 255, 255, 255))
    image = Image.alpha_composite(white, rgb).convert("RGB")
    return image, (Image.fromarray((mask * 255).astype(np.uint8), "L") if mask.any() else None)


def outpaint_preview(value, *pads: int) -> dict:
    """The canvas as outpainting will extend it: the picture, and the area to be added striped, with
    a line along the picture's edge (nothing to show without a picture or an extension)."""
    bg = (value or {}).get("background")
    pads = tuple(int(p) for p in pads)
    if bg is None or not any(pads):
        return gr.update(value=None, visible=False)
    bg = (bg if isinstance(bg, Image.Image) else Image.fromarray(np.asarray(bg))).convert("RGB")
    canvas, mask = extend_canvas(bg, None, pads)
    k = max(1, -(-PREVIEW_MIN_SIDE // max(canvas.size)))           # drawn k times larger (nearest)
    a = np.asarray(canvas.resize((canvas.width * k, canvas.height * k), Image.NEAREST)).copy()
    new = np.asarray(mask.resize((canvas.width * k, canvas.height * k), Image.NEAREST)) > 0
    yy, xx = np.indices(new.shape)
    stripes = new & (((xx + yy) // (2 * k)) % 2 == 0)
    a[stripes] = (0.45 * a[stripes] + 0.55 * np.array(NEW_AREA)).astype(np.uint8)
    shown = Image.fromarray(a)
    left, top = pads[0] * k, pads[1] * k
    ImageDraw.Draw(shown).rectangle([left - 1, top - 1, left + bg.width * k, top + bg.height * k],
                                    outline=NEW_AREA, width=2)
    w, h = canvas.size
    label = f"Outpainting: {bg.width}x{bg.height} -> {w}x{h} (striped: the area to be added)"
    return gr.update(value=shown, visible=True, label=label)


def reuse_editor(path, params: dict):
    """What Reuse puts in the editor: a result's source image and mask are not stored, so the result
    itself (an outpainting result cropped back to the canvas it extended, which it kept exactly)."""
    if not path or not params or "xyplot" in params:
        return gr.skip()
    try:
        image = Image.open(path).convert("RGB")
    except OSError:
        gr.Warning("the result's image could not be read (moved or deleted?): its settings are filled in, "
                   "upload the picture to the editor yourself")
        return gr.skip()
    left, top, right, bottom = (int(params.get(f"extend_{side}", 0) or 0) for side in SIDES)
    if any((left, top, right, bottom)) and params.get("keep_unmasked", True):
        image = image.crop((left, top, image.width - right, image.height - bottom))
        gr.Info("the editor shows the picture this result extended (cut back out of the result); "
                "its painted mask, if any, is not stored: paint it again")
    else:
        gr.Info(NOT_RECORDED)
    return {"background": image, "layers": [], "composite": image}


@dataclass
class InpaintTab:
    editor: gr.ImageEditor
    prompt: gr.Textbox
    negative_prompt: gr.Textbox
    controls: SamplingControls
    gallery: gr.Gallery
    keep_unmasked: gr.Checkbox
    mask_downsampling: gr.Radio
    mask_blur: gr.Slider
    extend: dict[str, gr.Slider]     # "extend_left", ... -> its slider

    @property
    def image_input(self):
        """What "send to" fills."""
        return self.editor

    @staticmethod
    def reuse_image(path, params: dict):
        """The editor's value for Reuse of the result at `path` (webui.wire_reuse)."""
        return reuse_editor(path, params)

    def params(self) -> dict:
        """The controls a result's info fills in (PNG info's "send to"), by info key."""
        return {"prompt": self.prompt, "negative_prompt": self.negative_prompt, **self.controls.params(),
                "keep_unmasked": self.keep_unmasked, "mask_downsampling": self.mask_downsampling,
                "mask_blur": self.mask_blur, **self.extend}


def follow_prompt(studio: Service, name: str):
    """A new model: the prompts (and guidance) usable only where the model reads text (the paper's
    inpainting_big does not); a prompt given to it anyway is ignored, with a warning."""
    try:
        entry = studio.entry("inpaint", name)
    except CatalogError:
        return gr.skip(), gr.skip(), gr.skip()
    text = entry.pipeline != "PaperInpaintPipeline"
    return (gr.update(interactive=text, info=None if text else NO_PROMPT), gr.update(interactive=text),
            gr.update(interactive=entry.guided))


def make_request(values: dict) -> InpaintRequest:
    """The request from the tab's named inputs: the editor's picture and painted mask."""
    pads = {f"extend_{side}": int(values.pop(f"extend_{side}")) for side in SIDES}
    image, mask = editor_to_image_and_mask(values.pop("editor"), outpainting=any(pads.values()))
    return InpaintRequest(image=image, mask=mask, **{**values, "keep_unmasked": bool(values["keep_unmasked"])}, **pads)


def build(studio: Service) -> InpaintTab:
    gr.HTML("", head=f"<style>{CSS}</style>", js_on_load=None, padding=False, container=False)
    with gr.Row():
        with gr.Column(scale=3):
            editor = checked_editor(bounded(gr.ImageEditor(
                label="Image: paint the region to repaint", type="pil", image_mode="RGBA",
                brush=gr.Brush(colors=[BRUSH], color_mode="fixed", default_size=6), layers=False, transforms=(),
                height=420, format="png", elem_id="inpaint-editor"), studio.limits), studio.limits)
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Prompt (what to paint; empty = fill plausibly)", lines=1,
                                elem_id="inpaint-prompt")
            tokens = gr.Column()                          # the token counter, once the model dropdown exists
            negative = gr.Textbox(label="Negative prompt", lines=1)
            generate, stop = buttons("inpaint", "Inpaint")
            shown = results("inpaint", columns=2)         # in sight of the button; the settings below
            slider = compare.before_after("inpaint-compare")
            controls = sampling_controls(studio, "inpaint", size=False)
            mask_blur = gr.Slider(0, MAX_MASK_BLUR, value=2, step=0.5, elem_id="inpaint-mask-blur",
                                  label="Mask blur (px): a soft seam inside the mask; 0 = a hard edge")
            with gr.Accordion("Outpainting: extend the canvas (the new area is painted for you)", open=False,
                              elem_id="inpaint-outpaint"):
                with gr.Row():
                    extend = {f"extend_{side}": gr.Slider(0, 256, value=0, step=8, label=f"{side.title()} (px)",
                                                          elem_id=f"inpaint-extend-{side}") for side in SIDES}
                gr.Markdown(OUTPAINT_PROMPT, elem_id="inpaint-outpaint-prompt")
                preview = gr.Image(label="Outpainting", type="pil", interactive=False, visible=False, format="png",
                                   elem_id="inpaint-outpaint-preview", height=260)
            with gr.Accordion("Advanced", open=False):
                keep_unmasked = gr.Checkbox(True, label="Keep every pixel outside the mask exactly (off: as decoded, "
                                            "as diffusers)", elem_id="inpaint-keep-unmasked")
                mask_downsampling = gr.Radio(list(MASK_DOWNSAMPLING), value="max", label="Mask on the latent grid: "
                                             "max (thin strokes kept) or nearest (as diffusers)",
                                             elem_id="inpaint-mask-downsampling")
    inputs = {"editor": editor, "prompt": prompt, "negative_prompt": negative, **controls.inputs(),
              "keep_unmasked": keep_unmasked, "mask_downsampling": mask_downsampling, "mask_blur": mask_blur, **extend}
    compare.follow(shown.gallery, editor, slider)
    wire(studio, generate, stop, inputs, make_request, shown)
    controls.follow_model(studio, "inpaint")
    with tokens:
        token_counter(studio, "inpaint", prompt, controls.model)
    # queued, one at a time and the last one always: typing "32" draws "3" first, never last
    for trigger in (editor.upload, *(slider.change for slider in extend.values())):
        trigger(outpaint_preview, [editor, *extend.values()], preview, api_visibility="private",
                trigger_mode="always_last", concurrency_id="inpaint-outpaint-preview", show_progress="hidden")
    controls.model.change(lambda name: follow_prompt(studio, name), controls.model,
                          [prompt, negative, controls.guidance_scale], api_visibility="private")
    return InpaintTab(editor, prompt, negative, controls, shown.gallery, keep_unmasked, mask_downsampling, mask_blur,
                      extend)


if __name__ == "__main__":
    standalone(build, "Inpainting")
