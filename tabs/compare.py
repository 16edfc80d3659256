"""Before / after: a result beside what it was made from, on one `gr.ImageSlider` (drag the handle).
Super-resolution, image -> image and inpainting show their input against the result the gallery
shows first, or the one clicked.

    slider = compare.before_after("sr-compare")
    compare.follow(shown.gallery, image_input, slider)
"""
from __future__ import annotations

import gradio as gr
from PIL import Image

from .controls import item_path


def before_after(elem_id: str) -> gr.ImageSlider:
    """The slider, hidden until there is a result to compare."""
    return gr.ImageSlider(label="Before / after: drag the handle", type="pil", format="png", visible=False,
                          interactive=False, max_height=420, elem_id=elem_id)


def _image(value) -> Image.Image | None:
    """An input's value as a picture: a file path, a PIL image, or an image editor's dict (its background)."""
    if isinstance(value, dict) and "background" in value:
        value = value["background"]
    if isinstance(value, Image.Image):
        return value
    try:
        return Image.open(item_path(value)) if value else None
    except (OSError, ValueError):
        return None


def pair(before, after) -> dict:
    """The slider's update: the input scaled to the result's size (in pixel blocks, so a 4x upscale
    compares pixel for pixel), beside the result; hidden when either is missing."""
    before, after = _image(before), _image(after)
    if before is None or after is None:
        return gr.update(value=None, visible=False)
    if abs(before.width * after.height - after.width * before.height) > 0.02 * after.width * before.height:
        return gr.update(value=None, visible=False)   # another shape (an outpainted canvas): nothing to slide over
    after = after.convert("RGB")
    before = before.convert("RGB").resize(after.size, Image.Resampling.NEAREST)
    return gr.update(value=(before, after), visible=True)


def follow(results: gr.Gallery | gr.Image, source, slider: gr.ImageSlider) -> None:
    """New results show the first against `source`'s value; a click on a gallery image shows that one."""
    def first(before, shown):
        if isinstance(shown, (list, tuple)):
            shown = shown[0] if shown else None
        return pair(before, shown)

    results.change(first, [source, results], slider, api_visibility="private", show_progress="hidden")
    if isinstance(results, gr.Gallery):
        def clicked(before, shown, evt: gr.SelectData):
            return pair(before, shown[evt.index] if shown and evt.index is not None else None)
        results.select(clicked, [source, results], slider, api_visibility="private", show_progress="hidden")
