"""Build an argparse parser from a dataclass, so every option has one definition."""
from __future__ import annotations

import argparse
import dataclasses
import typing


def add_dataclass_args(parser: argparse.ArgumentParser, cls) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        name = "--" + f.name.replace("_", "-")
        origin = typing.get_origin(t)
        if t is bool:
            parser.add_argument(name, action=argparse.BooleanOptionalAction, default=default)
        elif origin in (tuple, list):
            item = typing.get_args(t)[0]
            parser.add_argument(name, type=item, nargs="+", default=default)
        else:
            base = t if t in (int, float, str) else str
            parser.add_argument(name, type=base, default=default)


def dataclass_from_args(cls, ns: argparse.Namespace):
    kw = {}
    for f in dataclasses.fields(cls):
        v = getattr(ns, f.name)
        if isinstance(v, list):
            v = tuple(v)
        kw[f.name] = v
    return cls(**kw)
