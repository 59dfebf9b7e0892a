"""`labrun compare [RUNS] [--experiment|--sweep|--tag|--filter] [--group-by KEY]`: which runs
differ in what, and whether a difference is real."""

from __future__ import annotations

import argparse
import math

from labrun.cli.common import Parser, add_store_options
from labrun.compare.report import compare


def parse(argv: list[str]) -> argparse.Namespace:
    p = Parser(prog="labrun compare", description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", help="run ids; two ids give a side-by-side diff")
    p.add_argument("--experiment", action="append", default=[], help="experiment name (repeatable)")
    p.add_argument("--sweep", help="sweep id: a multirun folder name or an Optuna study name")
    p.add_argument("--tag", action="append", default=[], help="KEY=VALUE (repeatable)")
    p.add_argument("--filter", default="", help="an MLflow filter string")
    p.add_argument("--group-by", action="append", default=[], help="param key(s); seeds pooled")
    p.add_argument("--metric", action="append", default=[], help="metric(s); default: test/*")
    p.add_argument(
        "--ci",
        choices=["t", "bootstrap"],
        default="t",
        help="confidence intervals: t (normal spread) or bootstrap (bounded metrics, few seeds)",
    )
    p.add_argument(
        "--seeds-needed",
        type=difference,
        metavar="DELTA",
        help="seeds per group to detect a difference of DELTA (metric units, or N%% = N/100)",
    )
    p.add_argument("--format", choices=["table", "csv", "md", "html"], default="table")
    p.add_argument("--plot", action="append", default=[], choices=["curves", "parallel", "scatter"])
    p.add_argument("-o", "--output", help="folder for the report file and plots")
    add_store_options(p, allow_target=False)
    return p.parse_args(argv)


def difference(text: str) -> float:
    """DELTA for --seeds-needed: 0.005, or 0.5% for half a point of accuracy; above zero."""
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number (e.g. 0.005 or 0.5%)") from None
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a difference above 0, got '{text}'")
    return value


def main(argv: list[str]) -> None:
    compare(parse(argv))
