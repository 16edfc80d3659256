"""The public HTTP API of docs/api.md: one endpoint per task (`/text2img`, `/layout2img`,
`/superres`, `/inpaint`, `/img2img`), made from the task modules.

Plain-valued endpoints (no drawing widgets) on hidden components, so `gradio_client` sees
exactly the contract's keyword parameters, in its order (`Task.api`), with their defaults:

    client.predict(prompt="a red circle", api_name="/text2img")
"""
from __future__ import annotations

import inspect
import json
import typing
from contextlib import closing
from dataclasses import MISSING, fields

import gradio as gr

from ldm_core.options import SAMPLER_NAMES
from ldm_core.tasks import TASKS, Task
from ldm_core.xyplot import AXES, Axis, XYPlotRequest

from .common import GPU_CONCURRENCY_ID, Studio, gpu, quota, stream, user_error

# request fields whose default is the task's default model's (catalog entry attribute)
FROM_MODEL = {"steps": "steps", "guidance_scale": "guidance", "width": "width", "height": "height",
              "sampler": "sampler", "model": "name"}
FILES = ("image", "mask")
NOTES = {"sampler": ", ".join(SAMPLER_NAMES), "back_projection": "iterations onto the input; 0 = off (as diffusers)",
         "average": "samples averaged; 1 = one (as diffusers); 0 = the model's default",
         "keep_unmasked": "pixels outside the mask exactly as given; false: as decoded (as diffusers)",
         "mask_downsampling": "max (thin strokes kept) or nearest (as diffusers)",
         "strength": "0 = the input unchanged, 1 = ignore it"}


def _results(studio: Studio, request, client: gr.Request | None = None):
    """Generator for an API event: an empty update every UPDATE_SECONDS while it runs (so that
    a client's cancel stops the generation: Gradio can only stop a generator between updates),
    then (paths, info JSON)."""
    try:
        with closing(stream(studio, request, previews=False, client=client)) as events:  # closed: it stops
            for ev in events:
                if isinstance(ev, tuple):
                    paths, info = ev
                    yield [str(p) for p in paths], json.dumps(info)
                    return
                yield gr.skip(), gr.skip()
    except gr.Error:
        raise
    except Exception as e:
        raise user_error(e) from None
    raise gr.Error("generation produced no image")


def _component(task: Task, name: str, hint, default_entry):
    """The hidden input of one request field: a file, a checkbox, a number or text, with its default."""
    if name in FILES:
        return gr.File(label=name, type="filepath")
    f = next(f for f in fields(task.request) if f.name == name)
    if task.api_defaults and name in task.api_defaults:
        value = task.api_defaults[name]
    elif name in FROM_MODEL:
        value = getattr(default_entry, FROM_MODEL[name])
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
    with closing(outs):
        for paths, info in outs:
            yield (paths[0] if isinstance(paths, list) else paths), info


def _named(names: tuple[str, ...], fn):
    """An event function with the named parameters `names`, then the gr.Request that Gradio passes by its
    type hint; `fn(values: dict, request)` does the work. (Gradio passes the declared parameters
    positionally and the request in its place after them.)"""
    def run(*values):
        request = values[len(names)] if len(values) > len(names) else None
        yield from fn(dict(zip(names, values[:len(names)])), request)

    params = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
    params.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                    annotation=gr.Request))
    run.__signature__ = inspect.Signature(params)
    run.__annotations__ = {"request": gr.Request}
    return gpu(run)


def endpoint(studio: Studio, task: Task):
    """The event function of a task's endpoint: the contract's named parameters, in its order."""
    def run(values: dict, request):
        outs = _results(studio, task.request(**{k: v for k, v in values.items() if v is not None}), request)
        yield from (_one_image(outs) if task.returns_one else outs)
    return _named(task.api, run)


XY_PARAMS = ("prompt", "negative_prompt", "steps", "guidance_scale", "seed", "width", "height", "sampler", "model",
             "x_axis", "x_values", "y_axis", "y_values")


def xyplot_endpoint(studio: Studio):
    """/xyplot: a text->image parameter against another, one labelled grid image back."""
    def run(v: dict, request):
        axes = {k: v.pop(k) for k in ("x_axis", "x_values", "y_axis", "y_values")}
        base = TASKS["text2img"].request(**{k: x for k, x in v.items() if x is not None})
        req = XYPlotRequest(base, Axis(axes["x_axis"], axes["x_values"]),
                            Axis(axes["y_axis"], axes["y_values"]) if axes["y_axis"] else None)
        yield from _one_image(_results(studio, req, request))
    return _named(XY_PARAMS, run)


def _xyplot(studio: Studio) -> None:
    task = TASKS["text2img"]
    hints, entry = typing.get_type_hints(task.request), studio.default("text2img")
    inputs = [_component(task, n, hints[n], entry) for n in XY_PARAMS[:9]]
    inputs += [gr.Textbox("seed", label="x_axis", info=", ".join(AXES)), gr.Textbox("1, 2, 3", label="x_values"),
               gr.Textbox("", label="y_axis", info="empty: one row"), gr.Textbox("", label="y_values")]
    gr.Button(visible=False).click(xyplot_endpoint(studio), inputs, [gr.Image(type="filepath", format="png"),
                                                                      gr.Textbox()],
                                   api_name="xyplot", concurrency_id=GPU_CONCURRENCY_ID,
                                   validator=quota(studio, len(inputs)))


def build(studio: Studio) -> None:
    with gr.Column(visible=False):
        if "text2img" in studio.tasks:
            _xyplot(studio)
        for task in (TASKS[name] for name in studio.tasks):
            hints = typing.get_type_hints(task.request)
            entry = studio.default(task.name)
            inputs = [_component(task, n, hints[n], entry) for n in task.api]
            result = gr.Image(type="filepath", format="png") if task.returns_one else gr.Gallery(format="png")
            gr.Button(visible=False).click(endpoint(studio, task), inputs, [result, gr.Textbox()],
                                           api_name=task.name, concurrency_id=GPU_CONCURRENCY_ID,
                                           validator=quota(studio, len(inputs)))
