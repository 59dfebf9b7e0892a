"""Sweep parents: one MLflow run per multirun or search, its trials as child runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mlflow.entities import RunTag
from mlflow.tracking import MlflowClient

from labrun.files import pyplot, written_whole
from labrun.store.client import check_reachable, ensure_experiment
from labrun.store.query import differing_params, rows, search_runs
from labrun.sweep.slurm_jobs import JOB_TAG, close_ended_jobs
from labrun.tables import markdown_table

PARENT_FILE = "labrun_parent.json"


def open_parent(
    uri: str,
    experiment: str,
    artifact_root: str | None,
    sweep_id: str,
    kind: str,
    config_text: str,
    tags: dict[str, str] | None = None,
) -> str:
    """The parent run of `sweep_id`: found again when a sweep resumes, else created; `tags`
    are set either way."""
    check_reachable(uri, 10.0)
    client = MlflowClient(uri)
    exp_id = ensure_experiment(client, experiment, artifact_root)
    found = client.search_runs(
        [exp_id], f"tags.`labrun.sweep_id` = '{sweep_id}' and tags.`labrun.role` = 'parent'"
    )
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in (tags or {}).items()])
        return run_id
    run = client.create_run(
        exp_id,
        run_name=f"{sweep_id}",
        tags={
            "labrun.role": "parent",
            "labrun.sweep_id": sweep_id,
            "labrun.sweep_kind": kind,
            "labrun.task": "sweep",
            **(tags or {}),
        },
    )
    client.log_text(run.info.run_id, config_text, "sweep/config.yaml")
    return run.info.run_id


def child_tags(parent_id: str, sweep_id: str, trial: int) -> dict[str, str]:
    return {
        "mlflow.parentRunId": parent_id,
        "labrun.sweep_id": sweep_id,
        "labrun.trial": str(trial),
        "labrun.role": "trial",
    }


def sweep_trials(client: MlflowClient, parent: Any, sweep_id: str) -> list[Any]:
    """The sweep's trials by number: SLURM's word on their jobs first, earlier attempts of a
    resumed sweep's jobs left out."""
    experiments = [client.get_experiment(parent.info.experiment_id).name]
    runs = search_runs(client, experiments, sweep=sweep_id)
    if any(JOB_TAG in r.data.tags for r in runs):
        close_ended_jobs(client, runs, parent.data.tags.get("labrun.sweep_dir"))
        runs = search_runs(client, experiments, sweep=sweep_id)
    runs = [r for r in runs if "labrun.superseded" not in r.data.tags]
    return sorted(runs, key=lambda r: int(r.data.tags.get("labrun.trial", 0)))


def summarize(
    uri: str, parent_id: str, sweep_id: str, metric: str, direction: str
) -> dict[str, Any]:
    """Write the summary table, best trial and a plot into the parent and close it.

    The parent ends FINISHED when every trial finished, FAILED otherwise; the counts say which.
    """
    client = MlflowClient(uri)
    runs = sweep_trials(client, client.get_run(parent_id), sweep_id)
    params = differing_params(runs)
    table = rows(runs, params, [metric])
    for row, run in zip(table, runs, strict=True):
        row["trial"] = int(run.data.tags.get("labrun.trial", -1))
        row["state"] = run.data.tags.get("labrun.trial_state", run.info.status)
        if slurm_state := run.data.tags.get("labrun.slurm.state"):  # what SLURM said
            reason = run.data.tags.get("labrun.slurm.reason")
            row["state"] += f" ({slurm_state}: {reason})" if reason else f" ({slurm_state})"
    scored = [  # a trial that did not finish is never the best one
        row
        for row, run in zip(table, runs, strict=True)
        if run.info.status == "FINISHED"
        and isinstance(row[metric], float)
        and not math.isnan(row[metric])
    ]
    best = (
        (max if direction == "maximize" else min)(scored, key=lambda r: r[metric])
        if scored
        else None
    )
    failed = sum(1 for r in runs if r.info.status != "FINISHED")
    summary = {
        "sweep_id": sweep_id,
        "metric": metric,
        "direction": direction,
        "trials": len(runs),
        "failed": failed,
        "best": best,
        "params": params,
        "table": table,
    }
    client.log_dict(parent_id, summary, "sweep/summary.json")
    client.log_text(
        parent_id,
        markdown_table(table, ["trial", "run", "state", *params, metric]),
        "sweep/summary.md",
    )
    tags = [RunTag("labrun.trials", str(len(runs))), RunTag("labrun.failed_trials", str(failed))]
    if best is not None:
        tags += [
            RunTag("labrun.best_run", best["run_id"]),
            RunTag("labrun.best_trial", str(best["trial"])),
        ]
        client.log_metric(parent_id, f"best/{metric}", best[metric])
    client.log_batch(parent_id, tags=tags)
    if scored:
        client.log_figure(parent_id, _trial_plot(scored, metric), "sweep/trials.png")
    client.set_terminated(parent_id, "FINISHED" if runs and not failed else "FAILED")
    return summary


def _trial_plot(scored: list[dict[str, Any]], metric: str) -> Any:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot([r["trial"] for r in scored], [r[metric] for r in scored], "o")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title("sweep trials")
    fig.tight_layout()
    return fig


def write_parent_file(sweep_dir: str | Path, info: dict[str, str]) -> None:
    with written_whole(Path(sweep_dir) / PARENT_FILE) as partial:
        partial.write_text(json.dumps(info))


def read_parent_file(sweep_dir: str | Path) -> dict[str, str] | None:
    path = Path(sweep_dir) / PARENT_FILE
    return json.loads(path.read_text()) if path.is_file() else None
