"""The contents of a mirror's files: tiny vocabularies, shrunk configs, seeded random weights,
booby-trapped pickles and placeholders (see `ldm_core.hub_mirror`)."""
from __future__ import annotations

import json
import pickle
import tempfile
from pathlib import Path

import diffusers
import torch
from diffusers.pipelines.latent_diffusion.pipeline_latent_diffusion import LDMBertConfig, LDMBertModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from ..hub import SKIP_COMPONENTS, plan
from .specs import SHRINK, RepoSpec


# ------------------------------------------------------------------ vocabularies (shrunk)
def bert_vocab() -> list[str]:
    """A BERT WordPiece vocabulary with the special tokens at bert-base-uncased's ids ([PAD] 0,
    [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103), every letter and digit alone and as a "##"
    continuation (so any lower-case word tokenizes), and some whole words."""
    v = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789") + list(".,;:!?'\"()-/&")
    words = ("a an the of and in on with to left right above below red green blue yellow cyan magenta circle "
             "square triangle diamond painting photo dog cat astronaut horse").split()
    return v + chars + ["##" + c for c in chars[:36]] + [w for w in words if w not in chars]


def clip_vocab() -> dict[str, int]:
    """A byte-level BPE vocabulary (GPT-2/CLIP byte alphabet, each byte alone and word-final,
    no merges) with <|startoftext|> and <|endoftext|> as its last two ids, as in CLIP (whose
    text encoder pools at the highest id when its config says eos_token_id 2)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = []
    extra = 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(vocab) + i for i, c in enumerate(chars)})
    n = len(vocab)
    vocab["<|startoftext|>"] = n
    vocab["<|endoftext|>"] = n + 1
    return vocab


# ------------------------------------------------------------------ weights
def mirror_config(class_name: str, config: dict, scale: str) -> dict:
    """The published config, shrunk for scale="tiny" (widths, depth of text encoders, vocabulary)."""
    if scale != "tiny":
        return dict(config)
    cfg = {**config, **SHRINK.get(class_name, {})}
    if class_name == "LDMBertModel":
        cfg["vocab_size"] = len(bert_vocab())
    if class_name == "CLIPTextModel":
        cfg["vocab_size"] = len(clip_vocab())
    return cfg


def _model(class_name: str, config: dict):
    cfg = {k: v for k, v in config.items() if not k.startswith("_")}
    torch.manual_seed(0)
    if class_name == "LDMBertModel":
        return LDMBertModel(LDMBertConfig(**cfg))
    if class_name == "CLIPTextModel":
        return CLIPTextModel(CLIPTextConfig(**cfg))
    return getattr(diffusers, class_name).from_config(cfg)


def _trap(marker: Path) -> bytes:
    """A pickle whose unpickling creates `marker` (opens it for writing)."""
    class Trap:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    return pickle.dumps(Trap(), protocol=2)


def _write_files(spec: RepoSpec, scale: str, marker: Path, prefer_fp16: bool = False) -> dict[str, bytes | Path]:
    """Contents of every file of the listing (bytes, or a path to a file already written)."""


    index = spec.configs["model_index.json"]
    wanted = plan(spec.repo_id, spec.commit, index, spec.files, prefer_fp16, spec.pickle_weights)
    tmp = Path(tempfile.mkdtemp(prefix="hub-mirror-"))
    out: dict[str, bytes | Path] = {}
    models: dict[str, dict] = {}
    for path in spec.files:
        comp, _, name = path.rpartition("/")
        if name == "config.json" and comp in index and comp not in SKIP_COMPONENTS:
            cfg = mirror_config(index[comp][1], spec.configs[path], scale)
            out[path] = (json.dumps(cfg, indent=2) + "\n").encode()
        elif path in spec.configs:
            out[path] = (json.dumps(spec.configs[path], indent=2) + "\n").encode()
        elif name == "vocab.txt":
            out[path] = ("\n".join(bert_vocab()) + "\n").encode()
        elif name == "vocab.json":
            out[path] = json.dumps(clip_vocab()).encode()
        elif name == "merges.txt":
            out[path] = b"#version: 0.2\n"
        elif name.endswith((".safetensors", ".bin")) and comp in index and path in wanted.files:
            if comp not in models:
                library, class_name = index[comp]
                cfg = mirror_config(class_name, spec.configs[f"{comp}/config.json"], scale)
                models[comp] = _model(class_name, cfg).state_dict()
            sd = models[comp]
            if ".fp16." in name:
                sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
            sd = {k: v.contiguous() for k, v in sd.items()}
            f = tmp / path.replace("/", "__")
            if name.endswith(".safetensors"):
                save_file(sd, str(f), metadata={"format": "pt"})
            else:
                torch.save(sd, f)
            out[path] = f
        elif name.endswith((".bin", ".ckpt", ".pt", ".pth")):
            out[path] = _trap(marker)                       # a pickle nobody may open
        elif name.endswith(".safetensors"):
            out[path] = b"not safetensors: a file the studio never reads"
        else:
            out[path] = f"placeholder for {path}\n".encode()
    return out
