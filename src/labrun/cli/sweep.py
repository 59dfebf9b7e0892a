"""`labrun sweep [OVERRIDES] hparams_search=NAME [--workers N]`: an Optuna search; running the
same command again resumes it."""

from __future__ import annotations

import argparse

from labrun.cli.common import Parser
from labrun.sweep.search import search


def main(argv: list[str]) -> None:
    parser = Parser(prog="labrun sweep", description=__doc__.splitlines()[0])
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides, hparams_search=NAME among them"
    )
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the study")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    search(args.overrides, args.workers, args.worker)
