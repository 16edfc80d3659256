"""Judge images against the scene they were asked to show.

- `judge_caption(scene, image)`: does the image show exactly the captioned objects
  (and, for relation captions, in the captioned relation)?
- `judge_layout(boxes, image)`: is each requested box filled by the right object?

Both run the classical detector (`detector.detect`), which is exact on ground-truth
renders, so ground truth scores 100 % (the spec's ceiling). Training measures accuracy with
them; `ldm_core.eval.metrics` turns many judgements into rates.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from .detector import Detection, box_iou, detect, match
from .shapes import CAPTION_FORMS, relation_holds

LAYOUT_MIN_IOU = 0.5


def _label(obj) -> str:
    """'color shape' from a ShapeObject/Detection, a (color, shape) pair or a label string."""
    if isinstance(obj, str):
        return obj
    if isinstance(obj, (tuple, list)):
        return f"{obj[0]} {obj[1]}"
    return f"{obj.color} {obj.shape}"


def judge_caption(scene, image, detections: list[Detection] | None = None) -> dict:
    """Judge `image` against a caption's scene spec.

    `scene` needs `.objects` (ShapeObjects or (color, shape) pairs, in caption order),
    `.form` (one of CAPTION_FORMS) and `.relation` (for form "relation": A is
    objects[0], B is objects[1]). Returns booleans:
      count_ok: as many objects detected as asked for;
      objects_ok: detected colours/shapes are exactly the asked ones (nothing extra or missing);
      relation_ok: (relation form only, else None) some A-like and B-like detection pair holds it;
      correct: objects_ok and relation_ok (where it applies).
    """
    if scene.form not in CAPTION_FORMS:
        raise ValueError(f"unknown caption form {scene.form!r}; expected one of {CAPTION_FORMS}")
    dets = detect(image) if detections is None else detections
    want = [_label(o) for o in scene.objects]
    found = [d.label for d in dets]
    objects_ok = Counter(found) == Counter(want)
    relation_ok = None
    if scene.form == "relation":
        a_label = want[0]
        b_label = want[1]
        # identical attributes: any ordered pair of two distinct detections may play A and B
        relation_ok = any(relation_holds(a, b, scene.relation)
                          for a in dets if a.label == a_label
                          for b in dets if b.label == b_label and b is not a)
    present = sum((Counter(found) & Counter(want)).values())
    return {
        "form": scene.form,
        "correct": bool(objects_ok and relation_ok is not False),
        "count_ok": len(found) == len(want),
        "objects_ok": bool(objects_ok),
        "relation_ok": relation_ok,
        "objects_found": present / len(want),   # fraction of asked objects present (partial credit)
        "detected": found,
    }


def _box_items(boxes) -> tuple[list[str], list]:
    """Accept [(label, box)] or [{"label": ..., "box": ...}] (Scene.boxes) with normalised boxes."""
    labels = []
    bxs = []
    for b in boxes:
        label, box = (b["label"], b["box"]) if isinstance(b, dict) else b
        labels.append(label)
        bxs.append(tuple(float(v) for v in box))
    return labels, bxs


def judge_layout(boxes, image, detections: list[Detection] | None = None,
                 min_iou: float = LAYOUT_MIN_IOU) -> dict:
    """Judge `image` against requested (label, normalised box) pairs.

    per_box[i]: a detection of the right colour and shape overlaps box i with IoU >= min_iou
    (one-to-one: each detection serves at most one box). mean_iou: for each box the best
    IoU of any detection (any label: a localisation score), 0 if none; averaged.
    """
    labels, bxs = _box_items(boxes)
    dets = detect(image) if detections is None else detections
    det_labels = [d.label for d in dets]
    det_boxes = [d.box for d in dets]
    per_box = [False] * len(labels)
    for i, _, iou in match(labels, bxs, det_labels, det_boxes):
        per_box[i] = iou >= min_iou
    best = [max((box_iou(b, db) for db in det_boxes), default=0.0) for b in bxs]
    return {
        "per_box": per_box,
        "all_correct": bool(all(per_box)),
        "mean_iou": float(np.mean(best)) if best else 0.0,
        "extra": max(0, len(dets) - sum(per_box)),  # detections not explaining a requested box
        "detected": det_labels,
    }
