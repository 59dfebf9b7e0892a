"""Where a sweep stands, read from the store alone: any machine that sees the store can ask,
whether or not the process that launched the sweep is still alive."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from labrun.errors import LabrunError
from labrun.store.query import search_runs
from labrun.sweep.slurm_jobs import JOB_TAG, close_ended_jobs

JOBS_TAG = "labrun.jobs"  # on a parent: how many jobs the sweep launches
STATES = ("queued", "running", "finished", "failed")


def count_jobs(task_overrides: list[str], sweeper_params: dict[str, str] | None = None) -> int:
    """How many jobs Hydra's basic sweeper makes of these overrides (and `hydra.sweeper.params`)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = [f"{k}={v}" for k, v in (sweeper_params or {}).items()]
    parsed = OverridesParser.create().parse_overrides([*params, *task_overrides])
    return sum(len(batch) for batch in BasicSweeper.split_arguments(parsed, None))


def parents(client: MlflowClient) -> list[Run]:
    """Every sweep parent in the store, newest first."""
    found = search_runs(client, filter_string="tags.`labrun.role` = 'parent'", include_parents=True)
    return found[::-1]


def find_parent(client: MlflowClient, sweep_id: str) -> Run:
    found = search_runs(
        client,
        sweep=sweep_id,
        filter_string="tags.`labrun.role` = 'parent'",
        include_parents=True,
    )
    if not found:
        raise LabrunError(
            f"no sweep '{sweep_id}' in the tracking store {client.tracking_uri}; "
            "labrun sweeps lists them"
        )
    return found[-1]


def trial_state(run: Run) -> str:
    status = run.info.status
    if status in ("RUNNING", "SCHEDULED"):
        return "running"
    return "finished" if status == "FINISHED" else "failed"


def sweep_state(client: MlflowClient, parent: Run) -> dict[str, Any]:
    """The parent's status, its trials (newest attempt of each job) and the count per state."""
    sweep_id = parent.data.tags["labrun.sweep_id"]
    runs = search_runs(client, sweep=sweep_id)
    unsaid = [r for r in runs if r.info.status != "FINISHED" and JOB_TAG in r.data.tags]
    if unsaid and close_ended_jobs(
        client, unsaid, parent.data.tags.get("labrun.sweep_dir")
    ):  # SLURM's word on the jobs that ended
        runs = search_runs(client, sweep=sweep_id)
    runs = [r for r in runs if "labrun.superseded" not in r.data.tags]
    newest: dict[int, Run] = {}
    for run in runs:  # oldest first: a later attempt of a job replaces an earlier one
        newest[int(run.data.tags.get("labrun.trial", -1))] = run
    trials = [newest[k] for k in sorted(newest)]
    counts = dict.fromkeys(STATES, 0)
    for run in trials:
        counts[trial_state(run)] += 1
    jobs = parent.data.tags.get(JOBS_TAG)
    if jobs and jobs.isdigit():
        counts["queued"] = max(int(jobs) - len(trials), 0)
    return {
        "sweep_id": sweep_id,
        "parent": parent.info.run_id,
        "status": parent.info.status,
        "kind": parent.data.tags.get("labrun.sweep_kind", ""),
        "started": parent.info.start_time,
        "counts": counts,
        "trials": trials,
        "best": parent.data.tags.get("labrun.best_run"),
    }


def wait(
    client: MlflowClient,
    sweep_id: str,
    every_s: float = 5.0,
    on_change: Callable[[dict[str, Any]], None] | None = None,
    timeout_s: float | None = None,
    settle: Callable[[Run], Any] | None = None,
) -> dict[str, Any]:
    """Poll until the sweep's parent is closed; `on_change` sees each new set of counts,
    `settle` each parent first (a detached sweep whose last job could not close it)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    seen = None
    while True:
        if settle and settle(find_parent(client, sweep_id)):
            continue  # closed just now: read it again
        state = sweep_state(client, find_parent(client, sweep_id))
        if on_change and (state["status"], state["counts"]) != seen:
            on_change(state)
            seen = (state["status"], state["counts"])
        if state["status"] != "RUNNING":
            return state
        if deadline is not None and time.monotonic() > deadline:
            raise LabrunError(f"sweep {sweep_id} still RUNNING after {timeout_s:.0f} s")
        time.sleep(every_s)


def as_json(state: dict[str, Any]) -> dict[str, Any]:
    """A sweep's state for scripts: every field but the runs, which become rows."""
    rows = [
        {
            "trial": int(r.data.tags.get("labrun.trial", -1)),
            "run_id": r.info.run_id,
            "status": r.info.status,
            "slurm_job": r.data.tags.get("labrun.slurm.job_id"),
            "slurm_state": r.data.tags.get("labrun.slurm.state"),
            "slurm_reason": r.data.tags.get("labrun.slurm.reason"),
        }
        for r in state["trials"]
    ]
    return {**{k: v for k, v in state.items() if k != "trials"}, "trials": rows}
