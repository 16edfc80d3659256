"""Perceptual compression tab (paper §3.1, §4.1): the user's picture encoded and decoded by each
first-stage autoencoder there is, the reconstructions side by side, and a table of what each kept
(latent shape, factor f, compression, PSNR, SSIM, time). A tool tab, not a task: nothing is saved.

    python -m tabs.compression        # this tab alone, on the built-in models
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import gradio as gr

from ldm_core.compression import MAX_PIXELS
from ldm_core.service import Service
from server.errors import user_error
from server.fair_use import with_signature

from .common import GPU_CONCURRENCY_ID, gpu, standalone
from . import uploads

HEADERS = ["autoencoder", "kind", "f", "latent C×h×w", "pixel values per latent value", "PSNR (dB)", "SSIM",
           "encode + decode (s)", "note"]
INTRO = ("**Perceptual compression** (Rombach et al. 2022, §3.1 and §4.1): a latent diffusion model denoises "
         "the latents of a first-stage autoencoder that downsamples by a factor *f*. Upload a picture to see what "
         "each autoencoder keeps of it: its reconstruction, the latent's shape, how many pixel values each latent "
         "value stands for, PSNR and SSIM against your picture, and the time to encode and decode it here. "
         "Images up to 512×512; sides are padded to the autoencoder's multiple and cropped back.")


@dataclass
class CompressionTab:
    image: gr.Image
    which: gr.CheckboxGroup
    run: gr.Button
    gallery: gr.Gallery
    table: gr.Dataframe
    missing: gr.Markdown
    refresh: gr.Button
    listing: Callable              # () -> (CheckboxGroup update, missing Markdown): the autoencoders there are now


def choices(listed: list) -> tuple[list[tuple[str, str]], list[str]]:
    """Of `Service.autoencoders()`: (label, name) of each one on this machine, and the names checked
    at first (the built-ins)."""
    ready = [a for a in listed if a.ready]
    return [(a.label, a.name) for a in ready], [a.name for a in ready if a.default]


def missing_text(listed: list) -> str:
    """The zoo's first stages not converted here, with how to get each."""
    absent = [a for a in listed if not a.ready]
    if not absent:
        return "Every first stage of the paper's zoo is converted here."
    lines = [f"- `{a.name}`: {a.note} — `{a.how}`" for a in absent]
    return ("**Not on this machine**: download and convert once, with network access, then *Refresh*:\n"
            + "\n".join(lines))


def _number(x: float | None, digits: int) -> str:
    if x is None:
        return ""
    if math.isinf(x):
        return "∞ (identical)"
    return f"{x:.{digits}f}"


def row(t) -> list[str]:
    """One table row of a round trip (`Service.compress`'s)."""
    a = t.autoencoder
    note = t.error or "; ".join(s for s in (a.note, f"loaded in {t.load_seconds:.2f} s" if t.load_seconds else "")
                                if s)
    return [a.name, a.kind, str(a.f or ""), "×".join(map(str, t.latent_shape)) if t.latent_shape else "",
            f"{t.ratio:g}" if t.ratio else "", _number(t.psnr, 2), _number(t.ssim, 4), _number(t.seconds, 3), note]


def caption(t) -> str:
    a = t.autoencoder
    return (f"{a.name} · f={a.f} · {'×'.join(map(str, t.latent_shape))} · {_number(t.psnr, 1)} dB · "
            f"SSIM {_number(t.ssim, 3)}")


def build(studio: Service) -> CompressionTab:
    listed = studio.autoencoders()
    options, checked = choices(listed)
    gr.Markdown(INTRO)
    with gr.Row():
        with gr.Column(scale=2):
            image = uploads.checked(gr.Image(label="Your picture", type="filepath", sources=["upload", "clipboard"],
                                             height=260, elem_id="compress-input"),
                                    studio.limits, min(studio.limits.max_input_pixels, MAX_PIXELS))
            which = gr.CheckboxGroup(options, value=checked, label="Autoencoders", elem_id="compress-which")
            with gr.Row():
                run = gr.Button("Run", variant="primary", elem_id="compress-run")
                refresh = gr.Button("Refresh", size="sm", elem_id="compress-refresh")
            with gr.Accordion("The paper's first stages: how to get them", open=False):
                missing = gr.Markdown(missing_text(listed), elem_id="compress-missing")
        with gr.Column(scale=3):
            gallery = gr.Gallery(label="Your picture and its reconstructions", columns=3, height="auto",
                                 object_fit="contain", format="png", interactive=False, elem_id="compress-gallery")
    table = gr.Dataframe(headers=HEADERS, value=[], interactive=False, wrap=True, label="What each kept",
                         column_widths=["16%", "7%", "4%", "9%", "10%", "8%", "7%", "10%", "29%"],
                         elem_id="compress-table")

    def compress(path, names, request: gr.Request | None = None):
        try:
            trips = studio.compress(path, names or [])
        except Exception as e:
            raise user_error(e) from None
        shown = [(path, "your picture")] + [(t.image, caption(t)) for t in trips if t.image is not None]
        for t in trips:
            if t.error:
                gr.Warning(f"{t.autoencoder.name}: {t.error}")
        return shown, [row(t) for t in trips]

    def listing():
        now = studio.autoencoders()
        opts, first = choices(now)
        return gr.CheckboxGroup(choices=opts, value=first), missing_text(now)

    run.click(gpu(with_signature(compress, ["path", "names"])), [image, which], [gallery, table],
              concurrency_id=GPU_CONCURRENCY_ID, api_visibility="private")
    refresh.click(listing, None, [which, missing], api_visibility="private")
    return CompressionTab(image, which, run, gallery, table, missing, refresh, listing)


if __name__ == "__main__":
    standalone(build, "Perceptual compression")
