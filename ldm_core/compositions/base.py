"""What a composition module declares (`COMPOSITION = Composition(...)`): a plan over task requests."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..validation import Checked, Work


@dataclass
class Plan:
    """A composed request with every part that can be checked before any runs checked."""
    request: object              # the composed request as the user gave it
    first: list[Checked]         # the task requests to run first (the x/y plot's cells, hires' first stage)
    work: Work                   # the compute of every stage together
    data: Any = None             # what the composition needs to run the rest (hires: its model)


@dataclass(frozen=True)
class Option:
    """A parameter of a composition's own, beside those of its base task's request."""
    name: str
    type: type = str
    default: Any = None
    help: str = ""


@dataclass(frozen=True)
class Composition:
    name: str                     # "hires", "xyplot": the API's endpoint and the CLI's command when it has a request
    title: str
    applies: Callable             # (request) -> whether this composition runs it
    plan: Callable                # (request, catalog, limits) -> Plan, checked before anything runs
    run: Callable                 # (plan, run_task, callback) -> Result; run_task(request, callback) -> Result
    tasks: tuple[str, ...]        # the tasks whose requests it composes (whose tabs show it)
    needs: tuple[str, ...] = ()   # the other tasks it runs (hires: super-resolution)
    request: type | None = None   # its own request type, or None: it rides on fields of the task's request
    options: tuple[Option, ...] = field(default_factory=tuple)   # its own parameters (API, CLI)
    build: Callable | None = None  # (base task request, {option: value}) -> its request
    api: tuple[str, ...] = ()     # API: the base task's fields its endpoint takes, in order, then its options
    help: str = ""
