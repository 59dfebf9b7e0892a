"""`labrun sweep [OVERRIDES] hparams_search=NAME [--workers N]`: an Optuna search; running the
same command again resumes it. `labrun sweep status SWEEP_ID [--wait]`: where a sweep stands;
`labrun sweep resume SWEEP_ID`: continue one that did not finish, by its id."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from datetime import datetime
from typing import Any

from labrun.cli.common import Parser, add_store_options


def main(argv: list[str]) -> None:
    if argv and argv[0] in SUBCOMMANDS:
        SUBCOMMANDS[argv[0]](argv[1:])
        return
    from labrun.sweep.search import search

    parser = Parser(prog="labrun sweep", description=__doc__.splitlines()[0])
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides, hparams_search=NAME among them"
    )
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the study")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_intermixed_args(argv)  # overrides after --workers N too
    search(args.overrides, args.workers, args.worker)


def status(argv: list[str]) -> None:
    """`labrun sweep status SWEEP_ID [--wait]`: the trials and their states; with --wait, a
    line at each change until the sweep's parent is closed (exit 1 when it ends FAILED)."""
    from labrun.store.client import client_for
    from labrun.sweep.detach import close_if_done
    from labrun.sweep.status import as_json, find_parent, sweep_state, wait

    p = Parser(prog="labrun sweep status", description=status.__doc__)
    p.add_argument("sweep_id")
    p.add_argument("--wait", action="store_true", help="until the sweep has ended")
    p.add_argument("--every", type=float, default=5.0, help="seconds between looks (--wait)")
    p.add_argument("--timeout", type=float, default=None, help="give up after S seconds (--wait)")
    p.add_argument("--json", action="store_true", help="the state as JSON, for scripts")
    add_store_options(p, allow_target=False)
    args = p.parse_args(argv)
    client = client_for(args.tracking_uri)

    def settle(parent: Any) -> bool:
        return close_if_done(client, parent, None)

    if args.wait:
        said = None if args.json else _print_counts
        state = wait(client, args.sweep_id, args.every, said, args.timeout, settle)
    else:
        settle(find_parent(client, args.sweep_id))
        state = sweep_state(client, find_parent(client, args.sweep_id))
    if args.json:
        print(json.dumps(as_json(state)))
    else:
        _print_trials(state)
    if state["status"] in ("FAILED", "KILLED"):
        raise SystemExit(1)


def _print_counts(state: dict[str, Any]) -> None:
    counts = ", ".join(f"{n} {s}" for s, n in state["counts"].items())
    now = datetime.now().strftime("%H:%M:%S")
    print(f"[{now}] sweep {state['sweep_id']} {state['status']}: {counts}", flush=True)


def _print_trials(state: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sweep {state['sweep_id']} ({state['kind']}): {state['status']}")
    for col in ("trial", "run_id", "status", "slurm job", "note"):
        table.add_column(col, no_wrap=col != "note", overflow="fold")
    for run in state["trials"]:
        tags = run.data.tags
        table.add_row(
            tags.get("labrun.trial", ""),
            run.info.run_id,
            tags.get("labrun.trial_state") or run.info.status,
            tags.get("labrun.slurm.job_id", ""),
            tags.get("labrun.error", "")[:100],
        )
    console = Console()
    console.print(table)
    console.print(", ".join(f"{n} {s}" for s, n in state["counts"].items()))


def resume(argv: list[str]) -> None:
    """`labrun sweep resume SWEEP_ID [--allow-drift]`: the sweep's own command again."""
    import yaml

    from labrun.store.client import client_for
    from labrun.sweep.status import find_parent

    p = Parser(prog="labrun sweep resume", description=resume.__doc__)
    p.add_argument("sweep_id")
    p.add_argument("--allow-drift", action="store_true", help="continue although the code changed")
    add_store_options(p, allow_target=False)
    args = p.parse_args(argv)
    client = client_for(args.tracking_uri)
    parent = find_parent(client, args.sweep_id)
    if parent.info.status == "FINISHED":
        print(f"sweep {args.sweep_id} has finished: nothing to resume", file=sys.stderr)
        return
    text = client.download_artifacts(parent.info.run_id, "sweep/config.yaml")
    with open(text, encoding="utf-8") as f:
        recorded = yaml.safe_load(f)
    overrides = list(recorded.get("overrides") or [])
    if args.tracking_uri:
        overrides.append(f"tracking.uri={args.tracking_uri}")
    if parent.data.tags.get("labrun.sweep_kind") == "optuna":
        command = ["sweep", *overrides]
    else:
        hydra = [
            o for o in recorded.get("hydra_overrides") or [] if not o.startswith("hydra.mode=")
        ]
        command = [
            "train",
            "-m",
            *hydra,
            *overrides,
            *(["--allow-drift"] if args.allow_drift else []),
        ]
    print("labrun " + shlex.join(command), file=sys.stderr, flush=True)
    os.execv(sys.executable, [sys.executable, "-m", "labrun", *command])  # the command itself


SUBCOMMANDS = {"status": status, "resume": resume}
