"""The caption -> layout planner (`ldm_core/planner.py`): Shapes World captions in, their scenes' labels
and boxes out, as box tokens, by next-token cross-entropy.

The caption is read as word ids only (the vocabulary is every word the training captions use); the
relation words mean nothing until training ties them to box arrangements. Some arrangements are never
trained on: relation captions whose (relation word, first object's colour, second object's shape) is
one of `HELD_OUT` (8 of the 96 such triples) are skipped, and the evaluation scores them apart
(`held_out`), so it measures relations the model composes rather than remembers.

    python -m ldm_core.train planner --out runs/planner --export models/shapes-layout-planner
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.shapes import CAPTION_FORMS, COLORS, GAP, SHAPES, Scene, relation_holds, sample_scene
from ..planner import PAD, LayoutPlanner, PlannerConfig, load_planner, save_planner, words_of
from .common import RunConfig, save_json
from .loop import Budget, cosine_lr, resume, start, step_loop

# (relation word, colour of the first object, shape of the second): never trained on, scored apart
HELD_OUT = (("left of", "red", "square"), ("left of", "magenta", "diamond"), ("right of", "blue", "circle"),
            ("right of", "yellow", "triangle"), ("above", "green", "triangle"), ("above", "cyan", "circle"),
            ("below", "yellow", "diamond"), ("below", "red", "square"))
EVAL_SEED0 = 40_000_000           # evaluation scenes: seeds from here (training draws from 0)
VOCAB_SCENES = 4000               # scenes whose caption words make the vocabulary


@dataclass
class PlannerTrainConfig(RunConfig):
    out: str = "runs/planner"
    steps: int = 6000
    batch_size: int = 128
    lr: float = 1e-3
    width: int = 128
    heads: int = 4
    encoder_layers: int = 2
    decoder_layers: int = 3
    ff: int = 256
    relation_fraction: float = 0.4     # share of each batch that is relation captions (the rest: any form)
    eval_captions: int = 200           # per group (relation seen, relation held out, every form)
    export_captions: int = 500         # per group, scoring the exported weights (eval.json)
    temperature: float = 0.3           # sampling temperature of the evaluation and the export (chosen on a
                                       # validation split after the committed run: docs/training.md)
    export: str = ""                   # write the trained planner here (config.json, fp16 safetensors)
    sample_minutes: float = 2.0
    checkpoint_minutes: float = 2.0


def held_out(scene: Scene) -> bool:
    if scene.form != "relation":
        return False
    return (scene.relation, scene.objects[0].color, scene.objects[1].shape) in HELD_OUT


def training_scene(rng: random.Random, relation_fraction: float) -> Scene:
    """A scene of the training stream: a relation caption `relation_fraction` of the time, never a held-out one."""
    while True:
        form = "relation" if rng.random() < relation_fraction else rng.choice(CAPTION_FORMS)
        scene = sample_scene(rng.getrandbits(40), form, render=False)
        if not held_out(scene):
            return scene


def build_config(cfg: PlannerTrainConfig) -> PlannerConfig:
    """The vocabularies: every word of VOCAB_SCENES training captions, every colour x shape label."""
    rng = random.Random(12345)
    words = sorted({w for _ in range(VOCAB_SCENES) for w in words_of(training_scene(rng, 0.5).caption)})
    labels = [f"{c} {s}" for c in COLORS for s in SHAPES]
    return PlannerConfig(words=["<pad>", "<unk>", *words], labels=labels, width=cfg.width, heads=cfg.heads,
                         encoder_layers=cfg.encoder_layers, decoder_layers=cfg.decoder_layers, ff=cfg.ff,
                         temperature=cfg.temperature)


def batch(model: LayoutPlanner, scenes: list[Scene]) -> tuple[torch.Tensor, torch.Tensor]:
    """Word ids (B, W) and box tokens (B, T), both padded with 0."""
    words = [model.word_ids(s.caption) for s in scenes]
    tokens = [model.box_tokens([(o.label, o.box) for o in s.objects]) for s in scenes]
    pad = lambda rows: torch.tensor([r + [PAD] * (max(map(len, rows)) - len(r)) for r in rows])  # noqa: E731
    return pad(words), pad(tokens)


def train_step(cfg: PlannerTrainConfig, model, opt, rng: random.Random, step: int) -> dict:
    for g in opt.param_groups:
        g["lr"] = cosine_lr(cfg.lr, step, 200, step / cfg.steps)
    words, tokens = batch(model, [training_scene(rng, cfg.relation_fraction) for _ in range(cfg.batch_size)])
    logits = model(words, tokens[:, :-1])
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1), ignore_index=PAD)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return {"loss": loss.detach()}


def plan_right(scene: Scene, planned: list[tuple[str, tuple[float, ...]]]) -> bool:
    """The planned objects are the scene's (labels, in order), their boxes inside the canvas and 2 px
    apart, and a relation caption's relation holds between the planned boxes (docs/shapes-world.md)."""
    if [label for label, _ in planned] != [o.label for o in scene.objects]:
        return False
    px = [[v * 64 for v in box] for _, box in planned]
    for i, a in enumerate(px):
        for b in px[i + 1:]:
            if not (a[2] + GAP <= b[0] or b[2] + GAP <= a[0] or a[3] + GAP <= b[1] or b[3] + GAP <= a[1]):
                return False
    return scene.relation is None or relation_holds(_Centre(px[0]), _Centre(px[1]), scene.relation)


@dataclass(frozen=True)
class _Centre:
    """A planned box in pixels, as much of a Shapes World object as `relation_holds` reads."""
    px: list[float]

    @property
    def center(self) -> tuple[float, float]:
        return ((self.px[0] + self.px[2]) / 2, (self.px[1] + self.px[3]) / 2)


def eval_scenes(n: int) -> dict[str, list[Scene]]:
    """Evaluation captions: relation captions seen in kind / held out, and captions of every form."""
    groups: dict[str, list[Scene]] = {"relation": [], "held_out": [], "all_forms": []}
    seed = EVAL_SEED0
    while min(map(len, groups.values())) < n:
        seed += 1
        scene = sample_scene(seed, "relation" if seed % 2 else None, render=False)
        key = "held_out" if held_out(scene) else ("relation" if seed % 2 else "all_forms")
        if len(groups[key]) < n:
            groups[key].append(scene)
    return groups


def evaluate(model: LayoutPlanner, n: int, temperature: float) -> dict:
    """The share of captions planned right, per group (one plan each, seeded by its index)."""
    model.eval()
    scores = {k: float(np.mean([plan_right(s, model.plan(s.caption, i, temperature)) for i, s in enumerate(scenes)]))
              for k, scenes in eval_scenes(n).items()}
    model.train()
    return scores


def train(cfg: PlannerTrainConfig) -> LayoutPlanner:
    acc, out = start(cfg)
    model = LayoutPlanner(build_config(cfg))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    model, opt = acc.prepare(model, opt)
    ckpt, log = resume(acc, out, cfg)
    rng = random.Random(cfg.seed * 1_000_003 + ckpt.state["step"])    # a resumed run draws new scenes

    def report():
        row = {"step": ckpt.state["step"], **evaluate(model, cfg.eval_captions, cfg.temperature)}
        print(row)
        log.add(row)
        log.plot(out / "loss.png")

    budget = Budget(cfg.steps, cfg.max_minutes, cfg.cpu_clock)
    step_loop(acc, cfg, ckpt, log, budget, partial(train_step, cfg, model, opt, rng), report, log_last=True)
    if cfg.export:
        export(model, cfg, ckpt.state["step"])
    return model


def export(model: LayoutPlanner, cfg: PlannerTrainConfig, steps: int) -> Path:
    dest = Path(cfg.export)
    save_planner(model, dest)
    scores = evaluate(load_planner(dest), cfg.export_captions, cfg.temperature)
    save_json(dest / "eval.json", {"steps": steps, "temperature": cfg.temperature,
                                   "captions_per_group": cfg.export_captions,
                                   "plan_right": scores, "held_out": [list(t) for t in HELD_OUT]})
    print(f"exported to {dest}: {scores}")
    return dest
