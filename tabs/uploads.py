"""What the studio says about an input the moment it is given, the same in every tab.

An uploaded file that is not an image, or has too many bytes or pixels, is named with the limit
(a warning) and taken out of its input, read from its header before anything decodes it; if it
reaches an event anyway (Generate, a raw API call) it is refused with the same message, not with
Gradio's internals. A number typed into a slider's box past its ends, which the browser changes to
the end without a word, is said to have been changed.

    image = checked(gr.Image(type="filepath", ...), studio.limits)     # gr.Image, gr.File
    editor = checked_editor(gr.ImageEditor(...), studio.limits)        # decoded in the browser
    slider_checks()                                                    # once per page
"""
from __future__ import annotations

import base64
import binascii
import json
import re

import gradio as gr

from ldm_core.limits import Limits, image_problem
from server.errors import refuse

# what the browser sends of a file an image editor opens itself (it never reaches the server): the
# header is in it (a JPEG's size comes after its EXIF thumbnail, up to 64 kB)
HEAD_BYTES = 256 * 1024
PRIVATE = {"api_visibility": "private", "show_progress": "hidden"}

# the editor's file input (and a file dropped on it): its name, size and first bytes go to the
# server, which says what is wrong (the first load registers the listeners; a later one only
# updates which props they set)
EDITOR_JS = """
const id = %(id)s, g = (window.__ldmUploadChecks ||= {});
const first = !g[id];
g[id] = {props};
if (first) {
  const send = async (file) => {
    if (!file) return;
    const head = new Uint8Array(await file.slice(0, %(head)d).arrayBuffer());
    let s = '';
    for (let i = 0; i < head.length; i += 8192) s += String.fromCharCode(...head.subarray(i, i + 8192));
    g[id].props.value = JSON.stringify({name: file.name, bytes: file.size, head: btoa(s), at: Date.now()});
  };
  const inside = (e) => e.target && e.target.closest && e.target.closest('#' + id);
  document.addEventListener('change', (e) => {
    if (inside(e) && e.target.type === 'file') send(e.target.files && e.target.files[0]); }, true);
  document.addEventListener('drop', (e) => {
    if (inside(e)) send(e.dataTransfer && e.dataTransfer.files[0]); }, true);
}
"""

# a slider's number box left with a number past the slider's ends (the browser puts the end in
# its place by then): what was typed last and the ends go to the server, which says so
SLIDER_JS = """
const first = !window.__ldmSliderChecks;
window.__ldmSliderChecks = {props};
if (first) {
  const typed = new WeakMap();
  const slider = (box) => box && box.type === 'number' && box.closest('.wrap')?.querySelector('input[type=range]');
  document.addEventListener('input', (e) => { if (slider(e.target)) typed.set(e.target, e.target.value); }, true);
  document.addEventListener('focusout', (e) => {
    const box = e.target, text = typed.get(box);
    if (!slider(box) || text === undefined) return;
    typed.delete(box);
    const v = Number(text), lo = Number(box.min), hi = Number(box.max);
    if (text === '' || (v >= lo && v <= hi)) return;
    const label = (box.getAttribute('aria-label') || '').replace(/^number input for /, '');
    window.__ldmSliderChecks.props.value = JSON.stringify({label, typed: text, lo, hi, at: Date.now()});
  }, true);
}
"""


def _name(payload) -> str:
    """The uploaded file's own name, as a user would recognise it (no markup)."""
    orig = payload.get("orig_name") if isinstance(payload, dict) else getattr(payload, "orig_name", None)
    return re.sub(r"[<>&\"'`]", "", str(orig or ""))[:80] or "this file"


def upload_problem(payload, limits: Limits, max_pixels: int | None = None) -> str | None:
    """What is wrong with an uploaded file (Gradio's FileData, or its dict), in words; None: nothing."""
    if payload is None:
        return None
    get = payload.get if isinstance(payload, dict) else lambda k: getattr(payload, k, None)
    path, url = get("path"), get("url") or ""
    if path is None and url.startswith("data:"):          # an image sent inline, not uploaded
        try:
            data = base64.b64decode(url.partition(",")[2], validate=False)
        except (binascii.Error, ValueError):
            return f"{_name(payload)} is not an image"
        return image_problem(data, limits, max_pixels, _name(payload))
    return image_problem(path, limits, max_pixels, _name(payload)) if path else None


def checked(component, limits: Limits, max_pixels: int | None = None, in_events: bool = True):
    """`component` (gr.Image or gr.File, type="filepath") with its uploads checked from the file's
    header: at upload, a warning and the input emptied; when an event reads it (`in_events`; off
    where its own change event reads the file safely and says what is wrong), refused with the same
    message before Gradio decodes it. (Its preprocess is wrapped on the instance, as
    tabs.inpaint.bounded's: a subclass would make Gradio write a .pyi stub beside this file.)"""
    decode = component.preprocess

    def preprocess(payload):
        problem = upload_problem(payload, limits, max_pixels)
        if problem:
            raise refuse(problem)
        return decode(payload)

    def uploaded(value):
        problem = upload_problem(value, limits, max_pixels)
        if problem is None:
            return gr.skip()
        gr.Warning(problem)
        return None

    if in_events:
        component.preprocess = preprocess
    component.upload(uploaded, component, component, preprocess=False, **PRIVATE)
    return component


def editor_problem(sent: str | None, limits: Limits, max_pixels: int | None = None) -> str | None:
    """What is wrong with the file an image editor opened, from what EDITOR_JS sent of it."""
    try:
        info = json.loads(sent or "")
        head, size = base64.b64decode(info["head"]), int(info["bytes"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    return image_problem(head, limits, max_pixels, _name({"orig_name": info.get("name")}), size=size)


def checked_editor(editor: gr.ImageEditor, limits: Limits, max_pixels: int | None = None) -> gr.ImageEditor:
    """`editor` (with an elem_id), its uploads checked: the browser decodes them itself and drops
    what it cannot read without a word, so it sends the file's header here first; a problem is a
    warning, and an image it did put on its canvas is taken off again (once it is there: emptied
    earlier, the editor fails in the browser). At Generate the editor's own check applies
    (tabs.inpaint.bounded)."""
    seen = gr.HTML("", html_template="", visible="hidden", elem_id=f"{editor.elem_id}-upload-check",
                   js_on_load=EDITOR_JS % {"id": json.dumps(editor.elem_id), "head": HEAD_BYTES})

    def opened(sent):
        problem = editor_problem(sent, limits, max_pixels)
        if problem:
            gr.Warning(problem)

    def on_canvas(sent):         # emptied only once the editor is done with it (earlier, it fails in the browser)
        return gr.skip() if editor_problem(sent, limits, max_pixels) is None else None

    seen.change(opened, seen, None, **PRIVATE)
    editor.upload(on_canvas, seen, editor, **PRIVATE)
    return editor


def slider_problem(sent: str | None) -> str | None:
    """What SLIDER_JS saw: a number typed past a slider's ends, which the browser changed to the end."""
    try:
        info = json.loads(sent or "")
        typed, lo, hi = float(info["typed"]), float(info["lo"]), float(info["hi"])
    except (ValueError, KeyError, TypeError):
        return None
    if lo <= typed <= hi:
        return None
    label = re.sub(r"[<>&\"'`]", "", str(info.get("label") or "this slider"))[:60]
    end = lo if typed < lo else hi
    return f"{label} must be {lo:g}–{hi:g}; {str(info['typed'])[:20]} was changed to {end:g}"


def slider_checks() -> gr.HTML:
    """Once per page: a number typed past a slider's ends is said to have been changed (a warning)."""
    seen = gr.HTML("", html_template="", visible="hidden", elem_id="slider-check", js_on_load=SLIDER_JS)

    def typed(sent):
        problem = slider_problem(sent)
        if problem:
            gr.Warning(problem)

    seen.change(typed, seen, None, **PRIVATE)
    return seen
