"""The public HTTP API of docs/api.md: one endpoint per task (`/text2img`, `/layout2img`,
`/superres`, `/inpaint`, `/img2img`) and per composition with a request of its own (`/xyplot`),
made from the task and composition registries.

Plain-valued endpoints (no drawing widgets) on hidden components, so `gradio_client` sees
exactly the contract's keyword parameters, in its order (`Task.api`), with their defaults:

    client.predict(prompt="a red circle", api_name="/text2img")
"""
from __future__ import annotations

import json
import typing
from dataclasses import MISSING, fields

import gradio as gr

from ldm_core.catalog import REQUEST_DEFAULTS
from ldm_core.compositions import COMPOSITIONS, Composition
from ldm_core.jobs import Done
from ldm_core.options import SAMPLER_NAMES, SPEEDUP_NAMES
from ldm_core.service import Service
from ldm_core.tasks import TASKS, Task
from server.errors import user_error
from server.fair_use import validator, with_signature

from .common import GPU_CONCURRENCY_ID, gpu, job_events

FILES = ("image", "mask", "label_map")
NOTES = {"sampler": ", ".join(SAMPLER_NAMES), "back_projection": "iterations onto the input; 0 = off (as diffusers)",
         "average": "samples averaged; 1 = one (as diffusers); 0 = the model's default",
         "keep_unmasked": "pixels outside the mask exactly as given; false: as decoded (as diffusers)",
         "mask_downsampling": "max (thin strokes kept) or nearest (as diffusers)",
         "strength": "0 = the input unchanged, 1 = ignore it",
         "speedups": f"{', '.join(SPEEDUP_NAMES)} (comma-separated) or none; \"\" = the model's own"}
# what an MCP client (an LLM) reads of each endpoint: its tool's description and its parameters' (webui --mcp)
FILE_NOTE = "a data: URL (base64 PNG) or an http(s) URL"
ABOUT = {"prompt": "what the image shows", "negative_prompt": "what it should not show", "steps": "sampling steps",
         "guidance_scale": "classifier-free guidance scale", "seed": "-1 = random; the same seed, the same image",
         "num_images": "how many images", "width": "pixels", "height": "pixels",
         "model": "a model of the studio's catalog; default: the task's own", "image": f"the input image: {FILE_NOTE}",
         "mask": f"white = repaint, black = keep: {FILE_NOTE}",
         "label_map": f"a PNG in the model's class colours or of class ids: {FILE_NOTE}",
         "boxes": 'JSON [{"label": "red circle", "box": [x0, y0, x1, y1]}], coordinates in [0, 1]',
         "class_name": "a class name, several separated by ';' (one per image), or a class index",
         "regions": 'JSON [{"prompt": "a blue square", "box": [x0, y0, x1, y1]}]: boxes with prompts of their own',
         "plan_layout": 'the learned caption -> layout stage: "on", "off", or "" = the model\'s own (on for the '
                        'built-in text model)',
         "hires": "then 4x super-resolution of each image", "hires_model": "its model; \"\" = the default",
         "eta": "DDIM's eta, 0 to 1", **NOTES}
RETURNS = "the image(s) as PNG files that record their parameters, and the parameters used as a JSON string"


def _results(studio: Service, request, client: gr.Request | None = None):
    """Generator for an API event: an empty update every UPDATE_SECONDS while it runs (so that
    a client's cancel stops the generation: Gradio can only stop a generator between updates),
    then (paths, info JSON)."""
    for ev in job_events(studio, request, client, previews=False):
        if isinstance(ev, Done):
            yield [str(p) for p in ev.paths], json.dumps(ev.info)
            return
        yield gr.skip(), gr.skip()
    raise gr.Error("generation produced no image")


def _component(task: Task, name: str, hint, default_entry):
    """The hidden input of one request field: a file, a checkbox, a number or text, with its default."""
    if name in FILES:
        return gr.File(label=name, type="filepath")
    f = next(f for f in fields(task.request) if f.name == name)
    if task.api_defaults and name in task.api_defaults:
        value = task.api_defaults[name]
    elif name == "speedups":
        value = ""          # the chosen model's own
    elif name in REQUEST_DEFAULTS:
        value = default_entry.default_for(name)
    else:
        value = None if f.default is MISSING else f.default
    if hint is bool:
        return gr.Checkbox(value, label=name, info=NOTES.get(name))
    for kind, precision in ((int, 0), (float, None)):
        if hint is kind or kind in typing.get_args(hint):
            return gr.Number(value, precision=precision, label=name, info=NOTES.get(name))
    return gr.Textbox(value, label=name, info=NOTES.get(name))


def _one_image(outs):
    """The results generator's updates with its list of paths narrowed to the first (one image back)."""
    try:
        for paths, info in outs:
            yield (paths[0] if isinstance(paths, list) else paths), info
    finally:
        outs.close()


def describe(fn, name: str, summary: str, names, notes: dict) -> None:
    """Name `fn` after its endpoint and give it a docstring Gradio's MCP server reads (its tool's
    name, description and parameters' descriptions)."""
    args = [f"    {n}: {notes.get(n) or ABOUT.get(n) or n.replace('_', ' ')}" for n in names]
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = "\n".join([f"{summary}.", "", "Args:", *args, "", "Returns:", f"    {RETURNS}"])


def _event(studio: Service, names: tuple[str, ...], make_request, returns_one: bool, optional=(),
           about=("run", "", {})):
    """The event function of an endpoint whose parameters are `names`, in the contract's order
    (`optional`: those whose default is unset, i.e. the model's own; `about`: describe's name, summary, notes)."""
    def run(*values):
        client = values[len(names)] if len(values) > len(names) else None
        try:
            request = make_request({k: v for k, v in zip(names, values) if v is not None})
        except Exception as e:
            raise user_error(e) from None
        outs = _results(studio, request, client)
        yield from (_one_image(outs) if returns_one else outs)
    describe(run, about[0], about[1], names, about[2])
    return gpu(with_signature(run, list(names), optional=optional))


def _inputs(studio: Service, task: Task, names: tuple[str, ...]) -> list:
    hints = typing.get_type_hints(task.request)
    entry = studio.entry(task.name)
    return [_component(task, n, hints[n], entry) for n in names]


def _composition(studio: Service, comp: Composition) -> None:
    """A composition's endpoint: its base task's fields (`comp.api`), then its own options."""
    task = TASKS[comp.tasks[0]]
    inputs = _inputs(studio, task, comp.api)
    inputs += [gr.Textbox(o.default, label=o.name, info=o.help or None) for o in comp.options]
    names = (*comp.api, *(o.name for o in comp.options))
    own = {o.name for o in comp.options}

    def make_request(values: dict):
        base = task.request(**{k: v for k, v in values.items() if k not in own})
        return comp.build(base, {k: v for k, v in values.items() if k in own})
    about = (comp.name, comp.help or comp.title, {o.name: o.help for o in comp.options})
    gr.Button(visible=False).click(_event(studio, names, make_request, True, about=about), inputs,
                                   [gr.Image(type="filepath", format="png"), gr.Textbox()], api_name=comp.name,
                                   concurrency_id=GPU_CONCURRENCY_ID, validator=validator(list(names)))


def build(studio: Service) -> None:
    with gr.Column(visible=False):
        for comp in COMPOSITIONS.values():
            if comp.request is not None and comp.tasks[0] in studio.tasks:
                _composition(studio, comp)
        for task in (TASKS[name] for name in studio.tasks):
            result = gr.Image(type="filepath", format="png") if task.returns_one else gr.Gallery(format="png")
            unset = [k for k, v in (task.api_defaults or {}).items() if v is None]
            about = (task.name, f"{task.title}: {task.help}".replace("--", ""), {})   # (the CLI's flags: its names)
            gr.Button(visible=False).click(_event(studio, task.api, lambda v, t=task: t.request(**v), task.returns_one,
                                                  unset, about),
                                           _inputs(studio, task, task.api), [result, gr.Textbox()],
                                           api_name=task.name, concurrency_id=GPU_CONCURRENCY_ID,
                                           validator=validator(list(task.api)))
