"""Sweep parents: one MLflow run per multirun or search, its trials as child runs."""

from __future__ import annotations

import json
import logging
import math
import shlex
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, RunTag
from mlflow.tracking import MlflowClient

from labrun.files import pyplot, written_whole
from labrun.store.client import check_reachable, ensure_experiment
from labrun.store.query import differing_params, rows, search_runs
from labrun.sweep.slurm_jobs import JOB_TAG, close_ended_jobs
from labrun.tables import markdown_table
from labrun.tracking.provenance import command_words, mlflow_source

log = logging.getLogger(__name__)
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
        if error := found[0].data.tags.get("labrun.error"):  # the stop this run continues from
            client.set_tag(run_id, "labrun.resumed_after", error)
            client.delete_tag(run_id, "labrun.error")
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
            **mlflow_source(),
            "mlflow.note.content": f"Sweep `{sweep_id}` ({kind}); its trials are the child runs."
            f"\n\n    {shlex.join(command_words())}",
            **(tags or {}),
        },
    )
    client.log_text(run.info.run_id, config_text, "sweep/config.yaml")
    return run.info.run_id


REGISTER_TAG = "labrun.register_as"  # tracking.register_as of a sweep: its best is registered


def register_tag(cfg: Any) -> dict[str, str]:
    """The parent's tag naming the registered model its best trial becomes, if any."""
    name = cfg.tracking.get("register_as") if cfg.get("tracking") else None
    return {REGISTER_TAG: str(name)} if name else {}


def child_tags(parent_id: str, sweep_id: str, trial: int) -> dict[str, str]:
    return {
        "mlflow.parentRunId": parent_id,
        "labrun.sweep_id": sweep_id,
        "labrun.trial": str(trial),
        "labrun.role": "trial",
    }


def sweep_trials(client: MlflowClient, parent: Any, sweep_id: str) -> list[Any]:
    """The sweep's trials by number: SLURM's word on their jobs first, earlier attempts of a
    resumed sweep's jobs left out. Searched in every experiment: a job's config may name its
    own (`tracking.experiment=on-${hydra:runtime.choices.data}`, `experiment=a,b`)."""
    runs = search_runs(client, sweep=sweep_id)
    if any(JOB_TAG in r.data.tags for r in runs):
        close_ended_jobs(client, runs, parent.data.tags.get("labrun.sweep_dir"))
        runs = search_runs(client, sweep=sweep_id)
    runs = [r for r in runs if "labrun.superseded" not in r.data.tags]
    return sorted(runs, key=lambda r: int(r.data.tags.get("labrun.trial", 0)))


def summarize(
    uri: str, parent_id: str, sweep_id: str, metric: str, direction: str
) -> dict[str, Any]:
    """Write the summary table, best trial and a plot into the parent and close it.

    The parent ends FINISHED when every trial finished, FAILED otherwise; the counts say which.
    """
    client = MlflowClient(uri)
    parent = client.get_run(parent_id)
    runs = sweep_trials(client, parent, sweep_id)
    params = differing_params(runs)
    table = rows(runs, params, [metric])
    for row, run in zip(table, runs, strict=True):
        row["trial"] = int(run.data.tags.get("labrun.trial", -1))
        row["state"] = run.data.tags.get("labrun.trial_state", run.info.status)
        if slurm_state := run.data.tags.get("labrun.slurm.state"):  # what SLURM said
            reason = run.data.tags.get("labrun.slurm.reason")
            row["state"] += f" ({slurm_state}: {reason})" if reason else f" ({slurm_state})"
    scored, best = best_of(table, runs, metric, direction)
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
    log_trial_objectives(client, parent_id, scored, metric)
    if best is not None:
        shown = f"best trial {best['trial']} ({metric} {best[metric]:.4g})"
        note = f"Sweep `{sweep_id}`: {len(runs)} trials, {failed} failed, {shown}."
        tags.append(RunTag("mlflow.note.content", note))
        tags += [
            RunTag("labrun.best_run", best["run_id"]),
            RunTag("labrun.best_trial", str(best["trial"])),
        ]
        client.log_metric(parent_id, f"best/{metric}", best[metric])
    client.log_batch(parent_id, tags=tags)
    if scored:
        client.log_figure(parent_id, _trial_plot(scored, metric), "sweep/trials.png")
    if best is not None and (name := parent.data.tags.get(REGISTER_TAG)):
        register_best(client, parent_id, name)
    client.set_terminated(parent_id, "FINISHED" if runs and not failed else "FAILED")
    return summary


def log_trial_objectives(
    client: MlflowClient, parent_id: str, scored: list[dict[str, Any]], metric: str
) -> None:
    """Every trial's objective on the parent as `trials/<metric>`, step = trial number: the
    parent's own chart of the search (a resumed sweep's earlier trials are not logged twice)."""
    key = f"trials/{metric}"
    logged = {m.step for m in client.get_metric_history(parent_id, key)}
    ended = int(time.time() * 1000)
    objective = [
        Metric(key, row[metric], ended, row["trial"])
        for row in scored
        if row["trial"] not in logged
    ]
    for i in range(0, len(objective), 1000):
        client.log_batch(parent_id, metrics=objective[i : i + 1000])


def register_best(client: MlflowClient, parent_id: str, name: str) -> None:
    """The best trial's model as a new version of `name`, alias best; a trial without a model
    is a warning, not a failed sweep."""
    from labrun.errors import LabrunError
    from labrun.store.registry import register

    try:
        version = register(client, parent_id, name)
    except LabrunError as exc:
        log.warning("tracking.register_as=%s: %s", name, exc)
        return
    log.info("registered %s version %s (the best trial, alias best)", name, version.version)


def best_of(
    table: list[dict[str, Any]], runs: list[Any], metric: str, direction: str
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The rows of finished trials with a value (a trial that did not finish is never the
    best one), and the best of them."""
    scored = [
        row
        for row, run in zip(table, runs, strict=True)
        if run.info.status == "FINISHED"
        and isinstance(row[metric], float)
        and not math.isnan(row[metric])
    ]
    if not scored:
        return scored, None
    return scored, (max if direction == "maximize" else min)(scored, key=lambda r: r[metric])


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
