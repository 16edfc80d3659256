"""The classical Shapes World detector (`ldm_core.data.detector`) checked against ground truth:
`python -m ldm_core.eval detector`."""
from __future__ import annotations

from ..data.detector import degrade, detect, match
from ..data.shapes import CAPTION_FORMS, sample_scene


def validate(n: int = 2000, blur: float = 0.0, noise: float = 0.0, seed0: int = 20_000_000,
             min_iou: float = 0.9) -> dict:
    """Detector vs ground truth on n renders (forms cycled), optionally degraded.

    A scene is correct when the detections and the objects match one-to-one by colour
    and shape with box IoU >= min_iou, and nothing extra is detected.
    """
    correct = 0
    exact = 0
    objects = 0
    worst = 1.0
    for i in range(n):
        scene = sample_scene(seed0 + i, CAPTION_FORMS[i % len(CAPTION_FORMS)])
        img = degrade(scene.image, blur, noise, seed=i) if (blur or noise) else scene.image
        dets = detect(img)
        pairs = match([o.label for o in scene.objects], [o.box_px for o in scene.objects],
                      [d.label for d in dets], [d.box_px for d in dets])
        ious = [iou for _, _, iou in pairs] + [0.0] * (len(scene.objects) - len(pairs))
        objects += len(scene.objects)
        exact += sum(iou == 1.0 for iou in ious)
        worst = min(worst, *ious)
        correct += len(dets) == len(scene.objects) and min(ious) >= min_iou
    return {"scenes": n, "blur": blur, "noise": noise, "scene_accuracy": correct / n,
            "objects": objects, "exact_boxes": exact / objects, "min_iou": worst}
