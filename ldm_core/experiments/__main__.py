"""Experiments entry point.

    python -m ldm_core.experiments f-tradeoff [--budget-minutes 6 --ae-budget-minutes 4] [--docs docs]
    python -m ldm_core.experiments f-tradeoff --smoke --out /tmp/f-smoke     # seconds: checks the code path

Re-running a command resumes it: finished factors are kept, an unfinished one continues from its
checkpoint. The table and plots are written under --out (and into --docs when given).
"""
from __future__ import annotations

import argparse

from ..cli_util import add_dataclass_args, dataclass_from_args
from . import f_tradeoff, report
from .f_tradeoff import FTradeoffConfig


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ldm_core.experiments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="experiment", required=True)
    p = sub.add_parser("f-tradeoff", help="the autoencoder's factor f: speed against quality (paper Fig. 6, 7)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_dataclass_args(p, FTradeoffConfig)
    p.add_argument("--docs", default=None, help="also write the table and plots into this folder (e.g. docs)")
    ns = parser.parse_args(argv)
    f_tradeoff.run(dataclass_from_args(FTradeoffConfig, ns))
    print(report.write(ns.out, ns.docs))


if __name__ == "__main__":
    main()
