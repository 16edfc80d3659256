"""What a generation gives back: its images and the parameters each was made with."""
from __future__ import annotations

from dataclasses import dataclass

from .prompts import expand
from .validation import Checked


@dataclass
class Result:
    images: list                 # PIL images
    per_image: list[dict]        # per image: the parameters actually used (its own seed)
    info: dict                   # the request as run: shared parameters and every seed
    seconds: float = 0.0


def result_of(checked: Checked, out, seeds: list[int], seconds: float) -> Result:
    """A pipeline's output for `checked` as a Result: the request as run in `info`, each image's own seed."""
    req = checked.request
    w, h = out.images[0].size
    info = {"task": checked.task.name, "model": checked.entry.name, "steps": req.steps, "sampler": req.sampler,
            "size": f"{w}x{h}", "seeds": seeds, "seed": seeds[0], **checked.task.info(req),
            **getattr(out, "info", {}), "scheduler": out.scheduler}
    if out.warnings:
        info["warnings"] = list(out.warnings)
    own = checked.task.image_info or (lambda _req, _i: {})
    texts = [expanded(info, s) for s in out.seeds]
    per_image = [{**{k: v for k, v in info.items() if k not in ("seeds", "prompts")}, "seed": s, **own(req, i),
                  **texts[i]} for i, s in enumerate(out.seeds)]
    if any(texts):
        info["prompts"] = [t.get("prompt", info.get("prompt")) for t in texts]
    return Result(out.images, per_image, info, seconds)


def expanded(info: dict, seed: int) -> dict:
    """What image `seed` used of a prompt with wildcards (`ldm_core.prompts.expand`, as the pipeline
    picked them), and the prompt as typed (`prompt_template`); {} without wildcards."""
    out = {}
    for key in ("prompt", "negative_prompt"):
        typed = info.get(key)
        used = expand(typed, seed, key) if isinstance(typed, str) else typed
        if used != typed:
            out.update({key: used, f"{key}_template": typed})
    return out
