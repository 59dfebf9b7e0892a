"""`labrun runs`: the runs in a store, newest first; `--stale` finds and closes dead ones."""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from labrun.cli.common import Parser, add_store_options


def parse(argv: list[str]) -> argparse.Namespace:
    from labrun.resume.stale import STALE_AFTER_S

    p = Parser(prog="labrun runs", description=__doc__)
    p.add_argument("--experiment", action="append", default=[], help="experiment name(s)")
    p.add_argument("--status", choices=["RUNNING", "FINISHED", "FAILED", "KILLED"])
    p.add_argument("-n", "--limit", type=int, default=20, help="how many runs (default 20)")
    p.add_argument(
        "--stale",
        action="store_true",
        help="RUNNING runs whose process is gone, marked FAILED (resume them with labrun resume)",
    )
    p.add_argument("--dry-run", action="store_true", help="with --stale: list, mark nothing")
    p.add_argument(
        "--stale-after",
        type=float,
        default=STALE_AFTER_S / 60,
        help="minutes without a heartbeat before a run on another host counts as stale",
    )
    add_store_options(p, allow_target=False)
    return p.parse_args(argv)


def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%m-%d %H:%M") if ms else ""


def runs(args: argparse.Namespace) -> list[dict[str, Any]]:
    from labrun.resume.stale import mark_stale, stale_reason
    from labrun.store.client import client_for
    from labrun.store.query import search_runs

    client = client_for(args.tracking_uri)
    status = "RUNNING" if args.stale else args.status
    found = search_runs(
        client,
        args.experiment,
        filter_string=f"attributes.status = '{status}'" if status else "",
        include_parents=True,
    )
    found.reverse()  # newest first
    names = {e.experiment_id: e.name for e in client.search_experiments()}
    rows = []
    for run in found:
        reason = stale_reason(run, args.stale_after * 60) if args.stale else None
        if args.stale and reason is None:
            continue
        if reason and not args.dry_run:
            mark_stale(client, run, reason)
        tags = run.data.tags
        marked = reason and not args.dry_run
        rows.append(
            {
                "run_id": run.info.run_id,
                "name": run.info.run_name,
                "experiment": names.get(run.info.experiment_id, run.info.experiment_id),
                "status": "FAILED (stale)" if marked else run.info.status,
                "started": _when(run.info.start_time),
                "task": tags.get("labrun.task", ""),
                "note": reason
                or tags.get("labrun.verdict", "")
                or tags.get("labrun.error", "")[:60],
            }
        )
    return rows[: args.limit] if not args.stale else rows


def main(argv: list[str]) -> None:
    from rich.console import Console
    from rich.table import Table

    args = parse(argv)
    rows = runs(args)
    console = Console()
    if args.stale and not rows:
        console.print("no stale runs")
        return
    title = "stale runs" + (" (not marked: --dry-run)" if args.dry_run else ", marked FAILED")
    table = Table(title=title if args.stale else "runs, newest first")
    table.add_column("run_id", no_wrap=True, min_width=32)  # whole, to copy into a command
    for col in ("experiment", "status", "started"):
        table.add_column(col, no_wrap=True, overflow="ellipsis", max_width=20)
    table.add_column("note", overflow="fold", min_width=8)
    for row in rows:
        note = row["note"] if row["task"] in ("train", "") else f"{row['task']} {row['note']}"
        table.add_row(row["run_id"], row["experiment"], row["status"], row["started"], note)
    console.print(table)
