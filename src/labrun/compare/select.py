"""Which runs a comparison is about, and which of their metrics."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from labrun.errors import LabrunError
from labrun.store.client import get_runs
from labrun.store.query import search_runs


def select(client: Any, args: argparse.Namespace) -> list[Any]:
    if args.runs:
        runs = get_runs(client, args.runs)
    else:
        tags = {}
        for item in args.tag:
            key, sep, value = item.partition("=")
            if not sep:
                raise LabrunError(f"--tag takes KEY=VALUE, got '{item}'")
            tags[key] = value
        runs = search_runs(client, args.experiment, args.sweep, tags, args.filter)
    if not runs:
        raise LabrunError(
            "no runs match the selection; check --experiment, --sweep, --tag or --filter"
        )
    return runs


def pick_metrics(runs: Sequence[Any], wanted: Sequence[str]) -> list[str]:
    logged = sorted({m for r in runs for m in r.data.metrics})
    if wanted:
        missing = [m for m in wanted if m not in logged]
        if missing:
            raise LabrunError(
                f"metric {missing[0]} was never logged by the selected runs; "
                f"they logged: {', '.join(logged) or 'nothing'}"
            )
        return list(wanted)
    return [m for m in logged if m.startswith("test/")] or logged
