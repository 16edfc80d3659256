"""Every bound a request is checked against, in one place.

Checked before any image is decoded or any model is called. Operators can tighten or
loosen them with `Limits(...)` passed to the stack (webui flags map onto these fields).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_prompt_chars: int = 1000
    max_steps: int = 150
    min_steps: int = 1
    max_guidance: float = 30.0
    max_images: int = 8                 # images per request (batch)
    min_side: int = 32                  # generated width/height, pixels
    max_side: int = 1024
    max_boxes: int = 8
    max_boxes_json_chars: int = 20_000
    max_upload_bytes: int = 20 * 1024 * 1024
    max_input_pixels: int = 1024 * 1024         # uploaded image, width * height
    max_superres_input_pixels: int = 512 * 512  # super-resolution input (output is 16x that)
    max_seed: int = 2 ** 32 - 1
    max_back_projection: int = 20               # super-resolution: iterations onto the input
    max_average: int = 16                       # super-resolution: samples averaged per image


DEFAULT_LIMITS = Limits()
