"""The public HTTP API of docs/api.md: /text2img, /layout2img, /superres, /inpaint.

Plain-valued endpoints (no drawing widgets) on hidden components, so `gradio_client`
sees exactly the spec's keyword parameters with their defaults:

    client.predict(prompt="a red circle", api_name="/text2img")
"""
from __future__ import annotations

import json
from contextlib import closing

import gradio as gr

from ldm_core.options import SAMPLER_NAMES
from ldm_core.requests import (DEFAULT_BACK_PROJECTION, InpaintRequest, Layout2ImgRequest, SuperResRequest,
                               Text2ImgRequest)
from ldm_core.stack import ModelStack

from .common import GPU_CONCURRENCY_ID, gpu, quota, stream, user_error


def _finish(stack: ModelStack, request, client: gr.Request | None = None):
    """Generator for an API event: an empty update per step (so that a client's cancel stops
    the generation between two steps: Gradio can only stop a generator between updates),
    then (paths, info JSON)."""
    try:
        with closing(stream(stack, request, preview_every=0, client=client)) as events:  # closed: the generation stops
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


def build(stack: ModelStack) -> None:
    cat = stack.catalog
    t2i, lay, sr, inp = (cat.default(t) for t in ("text2img", "layout2img", "superres", "inpaint"))

    def sampling(entry, size=True):
        comps = [gr.Number(entry.steps, precision=0, label="steps"),
                 gr.Number(entry.guidance, label="guidance_scale"),
                 gr.Number(-1, precision=0, label="seed"),
                 gr.Number(1, precision=0, label="num_images")]
        if size:
            comps += [gr.Number(entry.width, precision=0, label="width"),
                      gr.Number(entry.height, precision=0, label="height")]
        comps += [gr.Textbox(entry.sampler, label="sampler", info=", ".join(SAMPLER_NAMES)),
                  gr.Textbox(entry.name, label="model")]
        return comps

    with gr.Column(visible=False):
        # /text2img
        prompt = gr.Textbox(label="prompt")
        negative = gr.Textbox("", label="negative_prompt")
        s = sampling(t2i)
        out_g, out_j = gr.Gallery(format="png"), gr.Textbox()

        @gpu
        def text2img(prompt, negative_prompt, steps, guidance_scale, seed, num_images, width, height, sampler, model,
                     request: gr.Request):
            yield from _finish(stack, Text2ImgRequest(prompt=prompt, negative_prompt=negative_prompt, steps=steps,
                                                      guidance_scale=guidance_scale, seed=seed, num_images=num_images,
                                                      width=width, height=height, sampler=sampler, model=model),
                               request)

        gr.Button(visible=False).click(text2img, [prompt, negative, *s], [out_g, out_j], api_name="text2img",
                                       concurrency_id=GPU_CONCURRENCY_ID, validator=quota(stack, 10))

        # /layout2img
        l_prompt = gr.Textbox(label="prompt")
        boxes = gr.Textbox("[]", label="boxes")
        l_neg = gr.Textbox("", label="negative_prompt")
        ls = sampling(lay)
        l_g, l_j = gr.Gallery(format="png"), gr.Textbox()

        @gpu
        def layout2img(prompt, boxes, negative_prompt, steps, guidance_scale, seed, num_images, width, height,
                       sampler, model, request: gr.Request):
            yield from _finish(stack, Layout2ImgRequest(prompt=prompt, boxes=boxes, negative_prompt=negative_prompt,
                                                        steps=steps, guidance_scale=guidance_scale, seed=seed,
                                                        num_images=num_images, width=width, height=height,
                                                        sampler=sampler, model=model), request)

        gr.Button(visible=False).click(layout2img, [l_prompt, boxes, l_neg, *ls], [l_g, l_j], api_name="layout2img",
                                       concurrency_id=GPU_CONCURRENCY_ID, validator=quota(stack, 11))

        # /superres
        sr_image = gr.File(label="image", type="filepath")
        sr_steps = gr.Number(sr.steps, precision=0, label="steps")
        sr_seed = gr.Number(-1, precision=0, label="seed")
        sr_model = gr.Textbox(sr.name, label="model")
        sr_bp = gr.Number(DEFAULT_BACK_PROJECTION, precision=0, label="back_projection",
                          info="iterations onto the input; 0 = off (as diffusers)")
        sr_avg = gr.Number(0, precision=0, label="average", info="samples averaged; 1 = one (as diffusers); 0 = the "
                           "model's default")
        sr_out, sr_j = gr.Image(type="filepath", format="png"), gr.Textbox()

        @gpu
        def superres(image, steps, seed, model, back_projection, average, request: gr.Request):
            req = SuperResRequest(image=image, steps=steps, seed=seed, model=model, back_projection=back_projection,
                                  average=average or None)
            with closing(_finish(stack, req, request)) as outs:
                for paths, info in outs:
                    yield (paths[0] if isinstance(paths, list) else paths), info

        gr.Button(visible=False).click(superres, [sr_image, sr_steps, sr_seed, sr_model, sr_bp, sr_avg],
                                       [sr_out, sr_j], api_name="superres", concurrency_id=GPU_CONCURRENCY_ID,
                                       validator=quota(stack, 6))

        # /inpaint
        i_image = gr.File(label="image", type="filepath")
        i_mask = gr.File(label="mask", type="filepath")
        i_prompt = gr.Textbox("", label="prompt")
        i_neg = gr.Textbox("", label="negative_prompt")
        i_s = sampling(inp)
        i_keep = gr.Checkbox(True, label="keep_unmasked", info="pixels outside the mask exactly as given; false: as "
                             "decoded (as diffusers)")
        i_down = gr.Textbox("max", label="mask_downsampling", info="max (thin strokes kept) or nearest (as diffusers)")
        i_g, i_j = gr.Gallery(format="png"), gr.Textbox()

        @gpu
        def inpaint(image, mask, prompt, negative_prompt, steps, guidance_scale, seed, num_images, width, height,
                    sampler, model, keep_unmasked, mask_downsampling, request: gr.Request):
            yield from _finish(stack, InpaintRequest(image=image, mask=mask, prompt=prompt,
                                                     negative_prompt=negative_prompt, steps=steps,
                                                     guidance_scale=guidance_scale, seed=seed, num_images=num_images,
                                                     width=width, height=height, sampler=sampler, model=model,
                                                     keep_unmasked=keep_unmasked,
                                                     mask_downsampling=mask_downsampling), request)

        gr.Button(visible=False).click(inpaint, [i_image, i_mask, i_prompt, i_neg, *i_s, i_keep, i_down], [i_g, i_j],
                                       api_name="inpaint", concurrency_id=GPU_CONCURRENCY_ID,
                                       validator=quota(stack, 14))
