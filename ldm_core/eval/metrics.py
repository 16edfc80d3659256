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


def layout_breakdown(per_prompt: list[dict], small: float) -> dict:
    """Per-box accuracy overall, for small (side <= `small`, normalised) and large boxes, and by boxes
    per layout ("1 box", "2 boxes", ...); images with every box right and images with extra
    detections. Each value is (rate, hits, n). `per_prompt`: evaluate_layout2img's results, whose
    entries hold "layout" ([{"label", "box"}]), "per_box" and "extra"."""
    boxes = [(max(b["box"][2] - b["box"][0], b["box"][3] - b["box"][1]), ok, len(p["layout"]))
             for p in per_prompt for b, ok in zip(p["layout"], p["per_box"])]

    def frac(oks: list[bool]) -> tuple[float, int, int]:
        return (sum(oks) / len(oks) if oks else float("nan")), sum(oks), len(oks)

    out = {"all": frac([ok for _, ok, _ in boxes]),
           "small": frac([ok for side, ok, _ in boxes if side <= small + 1e-9]),
           "large": frac([ok for side, ok, _ in boxes if side > small + 1e-9]),
           "images_all_right": frac([bool(p["all_correct"]) for p in per_prompt]),
           "images_extra": frac([p["extra"] > 0 for p in per_prompt])}
    for k in sorted({n for *_, n in boxes}):
        out[f"{k} box" + ("es" if k > 1 else "")] = frac([ok for _, ok, n in boxes if n == k])
    return out
