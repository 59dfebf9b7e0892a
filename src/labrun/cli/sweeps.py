"""`labrun sweeps`: every sweep in the store, newest first, with its trials per state."""

from __future__ import annotations

import json
from datetime import datetime

from labrun.cli.common import Parser, add_store_options


def main(argv: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    from labrun.store.client import client_for
    from labrun.sweep.status import STATES, parents, sweep_state

    p = Parser(prog="labrun sweeps", description=__doc__)
    p.add_argument("-n", "--limit", type=int, default=20, help="how many sweeps (default 20)")
    p.add_argument("--json", action="store_true", help="one JSON list, for scripts")
    add_store_options(p, allow_target=False)
    args = p.parse_args(argv)
    client = client_for(args.tracking_uri)
    states = [sweep_state(client, parent) for parent in parents(client)[: args.limit]]
    if args.json:
        print(json.dumps([{k: v for k, v in s.items() if k != "trials"} for s in states]))
        return
    table = Table(title="sweeps, newest first")
    table.add_column("sweep", no_wrap=True)
    for col in ("kind", "status", "started", *STATES, "best run"):
        table.add_column(col, no_wrap=True)
    for state in states:
        started = datetime.fromtimestamp(state["started"] / 1000).strftime("%m-%d %H:%M")
        counts = [str(state["counts"][s]) for s in STATES]
        table.add_row(
            state["sweep_id"], state["kind"], state["status"], started, *counts, state["best"] or ""
        )
    Console().print(table)
