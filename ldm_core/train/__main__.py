"""One entry point for every training stage.

    python -m ldm_core.train <stage> [options]          # one process (CPU or one GPU)
    accelerate launch -m ldm_core.train <stage> [...]   # several GPUs

`python -m ldm_core.train <stage> --help` lists a stage's options.
"""
from __future__ import annotations

import argparse
import importlib

from ..cli_util import add_dataclass_args, dataclass_from_args

# stage -> (module, config class); imported lazily so --help stays fast
STAGES = {
    "autoencoder": ("ldm_core.train.autoencoder", "AutoencoderConfig"),
    "text2img": ("ldm_core.train.text2img", "Text2ImgConfig"),
    "inpaint": ("ldm_core.train.inpaint", "InpaintConfig"),
    "superres": ("ldm_core.train.superres", "SuperResConfig"),
    "unconditional": ("ldm_core.train.unconditional", "UnconditionalConfig"),
    "class2img": ("ldm_core.train.class2img", "Class2ImgConfig"),
    "semantic": ("ldm_core.train.semantic", "SemanticConfig"),
    "planner": ("ldm_core.train.planner", "PlannerTrainConfig"),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ldm_core.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True)
    modules = {}
    for stage, (mod_name, cls_name) in STAGES.items():
        mod = importlib.import_module(mod_name)
        cls = getattr(mod, cls_name)
        p = sub.add_parser(stage, help=(mod.__doc__ or "").strip().splitlines()[0],
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        add_dataclass_args(p, cls)
        modules[stage] = (mod, cls)
    ns = parser.parse_args(argv)
    mod, cls = modules[ns.stage]
    mod.train(dataclass_from_args(cls, ns))


if __name__ == "__main__":
    main()
