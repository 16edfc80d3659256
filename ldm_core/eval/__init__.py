"""Evaluation for Shapes World models: a classical detector that judges images against
their captions and layouts, FID on a tiny in-world classifier, and evaluation suites.

    python -m ldm_core.eval detector             # detector vs ground truth, clean and degraded
    python -m ldm_core.eval train-classifier     # (re)train the FID feature network
    python -m ldm_core.eval fid-floor            # GT-vs-GT FID floor
    python -m ldm_core.eval autoencoder --model models/shapes-autoencoder
    python -m ldm_core.eval text2img --model NAME
    python -m ldm_core.eval layout2img --model NAME

Seeds: models train on scenes 0..9,999,999; everything here uses seeds >= 20,000,000
(text2img prompts 20_000_000+i per form, layout2img 20_500_000+i, autoencoder
21_000_000+i, FID floors 30_000_000+i, classifier training 50_000_000+, its held-out 60_000_000+).
"""
from ..data.detector import Detection, box_iou, detect
from ..data.judge import judge_caption, judge_layout
from .evaluate import evaluate_layout2img, evaluate_text2img
from .metrics import caption_summary, layout_summary

__all__ = ["Detection", "box_iou", "detect", "judge_caption", "judge_layout", "caption_summary",
           "layout_summary", "evaluate_text2img", "evaluate_layout2img"]
