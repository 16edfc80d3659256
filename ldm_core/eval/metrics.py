"""Turn judgements (`ldm_core.data.judge`: judge_caption, judge_layout) into rates."""
from __future__ import annotations

import numpy as np

from ..data.shapes import CAPTION_FORMS


def rate(results: list[dict], key: str = "correct") -> tuple[float, int, int]:
    """(rate, hits, n) of a boolean key over results (None values are skipped)."""
    vals = [bool(r[key]) for r in results if r.get(key) is not None]
    return (sum(vals) / len(vals) if vals else float("nan")), sum(vals), len(vals)


def caption_summary(results: list[dict]) -> dict:
    """Per-form and overall accuracy of judge_caption results: {form: {"accuracy", "correct", "n"}}."""
    out = {}
    for form in CAPTION_FORMS + ("all",):
        rs = results if form == "all" else [r for r in results if r["form"] == form]
        if rs:
            acc, hits, n = rate(rs)
            out[form] = {"accuracy": acc, "correct": hits, "n": n}
    return out


def layout_summary(results: list[dict]) -> dict:
    """Box accuracy, all-boxes-correct rate and mean IoU over judge_layout results."""
    per_box = [b for r in results for b in r["per_box"]]
    return {
        "box_accuracy": sum(per_box) / len(per_box) if per_box else float("nan"),
        "boxes": len(per_box),
        "image_accuracy": rate(results, "all_correct")[0],
        "images": len(results),
        "mean_iou": float(np.mean([r["mean_iou"] for r in results])) if results else float("nan"),
    }
