"""Every bound a request is checked against, in one place.

Checked before any image is decoded or any model is called. Operators can tighten or
loosen them with `Limits(...)` passed to the stack (webui flags map onto these fields).
"""
from __future__ import annotations

import io
import math
import os
import time
from contextvars import ContextVar
from dataclasses import dataclass, replace

from PIL import Image

MAX_SEED = 2 ** 32 - 1                  # seeds are 32-bit (torch.Generator.manual_seed takes any)


@dataclass(frozen=True)
class Limits:
    max_prompt_chars: int = 1000
    max_steps: int = 500              # the paper's zoo samples with 200 (CelebA-HQ, FFHQ, ImageNet) to 400 DDIM steps
    min_steps: int = 1
    max_guidance: float = 30.0
    max_images: int = 8                 # images per request (batch)
    min_side: int = 32                  # generated width/height, pixels
    max_side: int = 1024
    max_boxes: int = 8
    max_boxes_json_chars: int = 20_000
    max_upload_bytes: int = 20_000_000          # 20 MB (also Gradio's max_file_size in the web server)
    max_input_pixels: int = 1024 * 1024         # uploaded image, width * height
    max_superres_input_pixels: int = 512 * 512  # super-resolution input (output is 16x that)
    max_seed: int = MAX_SEED
    max_back_projection: int = 20               # super-resolution: iterations onto the input
    max_average: int = 16                       # super-resolution: samples averaged per image
    # compute budget: megapixel-steps a request may ask for (output pixels x steps x images x samples
    # averaged), checked before it is queued; and the wall time a generation may run. None: no bound
    # (the library and the command line); the web server sets both per device (SERVER_BUDGETS).
    max_work: float | None = None
    max_seconds: float | None = None
    max_jobs_per_client: int | None = None      # web server: generations running or waiting per client address


DEFAULT_LIMITS = Limits()

# (megapixel-steps, seconds) per request in the web server, by device type: what the device
# finishes within the time limit (docs/design-notes.md says what the CPU budget lets through).
SERVER_BUDGETS = {"cpu": (64.0, 300.0), "mps": (512.0, 300.0), "cuda": (4096.0, 300.0)}


# ------------------------------------------------------------------ uploaded images, from their header
IMAGE_FORMATS = "PNG, JPEG or WebP expected"


def read_size(src) -> tuple[int, int] | None:
    """(width, height) of the image file `src` (a path or bytes) from its header, nothing decoded, or
    None where no image format reads it. PIL's decompression-bomb cap is not applied here (it refuses
    without saying the size): the caller compares the size with its own limit."""
    Image.init()
    with (io.BytesIO(bytes(src)) if isinstance(src, (bytes, bytearray, memoryview)) else open(src, "rb")) as fp:
        prefix = fp.read(16)
        for fmt in Image.ID:              # as Image.open tries them, less its bomb check
            factory, accept = Image.OPEN[fmt]
            try:
                if accept is None or accept(prefix):
                    fp.seek(0)
                    return factory(fp, "").size
            except Exception:             # not this format: the next one
                continue
    return None


def megapixels(n: float) -> str:
    return f"{n / 1e6:.1f}" if n >= 950_000 else f"{n / 1e6:.2f}"


def pixels_problem(name: str, width: int, height: int, max_pixels: int) -> str | None:
    """What is wrong with an image of this size, in words for the user (None: nothing)."""
    if width * height <= max_pixels:
        return None
    side = math.isqrt(max_pixels)
    return (f"{name} is {width}×{height}, {megapixels(width * height)} megapixels; images up to "
            f"{megapixels(max_pixels)} megapixels (e.g. {side}×{side}) are accepted here")


def image_problem(src, limits: "Limits", max_pixels: int | None = None, name: str = "this file",
                  size: int | None = None) -> str | None:
    """What is wrong with the uploaded image file `src` (a path, or bytes: the file or its first bytes,
    `size` long in all), read from its header before anything decodes it: too many bytes, not an
    image, too many pixels; in words for the user. None: nothing."""
    if size is None:
        size = len(src) if isinstance(src, (bytes, bytearray, memoryview)) else os.path.getsize(src)
    if size > limits.max_upload_bytes:
        return f"{name} is {size / 1e6:.1f} MB; files up to {limits.max_upload_bytes / 1e6:g} MB are accepted"
    wh = read_size(src)
    if wh is None:
        return f"{name} is not an image ({IMAGE_FORMATS})"
    return pixels_problem(name, *wh, max_pixels or limits.max_input_pixels)


SERVER_JOBS_PER_CLIENT = 3    # one running and two waiting


def server_limits(device_type: str, base: "Limits | None" = None, max_work: float | None = None,
                  max_seconds: float | None = None, max_jobs_per_client: int | None = None) -> "Limits":
    """`base` with the web server's compute budget for `device_type` (or the operator's)."""
    work, seconds = SERVER_BUDGETS.get(device_type, SERVER_BUDGETS["cpu"])
    return replace(base or DEFAULT_LIMITS, max_work=max_work or work, max_seconds=max_seconds or seconds,
                   max_jobs_per_client=max_jobs_per_client or SERVER_JOBS_PER_CLIENT)


class TimeLimit(RuntimeError):
    """A generation ran past the limits' max_seconds and was stopped. The message is safe to show."""


# the running request's (deadline, seconds allowed), for checks outside the step loop (the decode)
_DEADLINE: ContextVar[tuple[float, float] | None] = ContextVar("ldm_deadline", default=None)


def with_deadline(callback, seconds: float | None):
    """`callback`, and a stop (TimeLimit) at the first step that ends after `seconds` from now; the
    same deadline is what `check_deadline` sees in this thread until the next call."""
    if not seconds:
        _DEADLINE.set(None)
        return callback
    deadline = time.perf_counter() + seconds
    _DEADLINE.set((deadline, seconds))

    def timed(step):
        if time.perf_counter() > deadline:
            raise TimeLimit(f"stopped after step {step.step} of {step.total}: this server allows {seconds:g} s "
                            f"per generation; use fewer steps or images, or a smaller size")
        return callback(step) if callback is not None else None
    return timed


def clear_deadline() -> None:
    """The running request of this thread is over: `check_deadline` checks nothing until the next."""
    _DEADLINE.set(None)


def check_deadline(what: str) -> None:
    """Stop (TimeLimit) the running request of this thread if it is past its deadline: called
    between the parts of a long operation (each image or tile an autoencoder decodes)."""
    current = _DEADLINE.get()
    if current is not None and time.perf_counter() > current[0]:
        raise TimeLimit(f"stopped while {what}: this server allows {current[1]:g} s per generation; use fewer "
                        f"steps or images, or a smaller size")
