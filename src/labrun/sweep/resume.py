"""A grid sweep (`labrun train -m`) continued: the same command again reopens the sweep that did
not finish, keeps its FINISHED trials and trains the others, in the same parent run.

A sweep is "the same" by its key: the experiment and its task overrides, sorted, without the
ones that only say where things go (`config.locations`), so it resumes from another launcher
(local, joblib, SLURM) or another run folder. A trial is kept when a FINISHED run of the same
job number has the same config hash (the resolved config without its location keys); any other
attempt of that job is marked superseded and the job trains again. The code the sweep started
with is recorded on the parent; code changed since then is refused unless `--allow-drift`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from labrun.config.locations import CONFIG_HASH_TAG, config_hash, is_location
from labrun.sweep.flags import ALLOW_DRIFT_ENV

log = logging.getLogger(__name__)
SUPERSEDED_TAG = "labrun.superseded"


def _sha(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def sweep_key(experiment: str, overrides: list[str]) -> str:
    """What makes two sweep commands the same sweep."""
    return _sha([experiment, sorted(o for o in overrides if not is_location(o.split("=")[0]))])[:16]


def code_hash(cfg: DictConfig) -> str:
    """The code a sweep runs: each target package's commit and diff, or its files' hash."""
    from labrun.tracking.code import code_state

    keep = ("commit", "diff", "sha256", "version")
    state = {name: {k: s.get(k) for k in keep} for name, s in code_state(cfg).items()}
    return _sha(state)[:16]


def resumable_parent(client: MlflowClient, experiment_id: str, key: str) -> Run | None:
    """The newest parent of this sweep key that did not finish (FAILED, KILLED, or RUNNING
    with its process gone)."""
    from labrun.resume.stale import stale_reason

    found = client.search_runs(
        [experiment_id],
        f"tags.`labrun.sweep_key` = '{key}' and tags.`labrun.role` = 'parent'",
        order_by=["attributes.start_time DESC"],
    )
    from labrun.sweep.status import sweep_state

    for run in found:
        if run.info.status == "FINISHED":
            return None  # the newest finished: the same command starts a new sweep
        if run.info.status != "RUNNING":
            return run
        if run.data.tags.get("labrun.detached") == "1":  # its jobs, not its process, say
            counts = sweep_state(client, run)["counts"]
            if not counts["queued"] and not counts["running"]:
                return run
        elif stale_reason(run):
            return run
        raise ResumeRefused(
            f"sweep {run.data.tags.get('labrun.sweep_id')} of this command is still running "
            f"(parent run {run.info.run_id}); wait for it (labrun sweep status "
            f"{run.data.tags.get('labrun.sweep_id')} --wait)"
        )
    return None


class ResumeRefused(Exception):
    """The sweep cannot be continued as asked: one line for the user."""


def check_drift(parent: Run, code_now: str) -> str | None:
    """None when the code is the parent's; else the line that says what changed, refused
    unless `--allow-drift`."""
    before = parent.data.tags.get("labrun.sweep_code")
    if before in (None, code_now):
        return None
    said = (
        f"the code changed since sweep {parent.data.tags.get('labrun.sweep_id')} started "
        f"(code {before} -> {code_now})"
    )
    if os.environ.get(ALLOW_DRIFT_ENV) != "1":
        raise ResumeRefused(
            f"{said}; restore it, or pass --allow-drift to continue with this code "
            "(the parent records it; trials whose config changed train again)"
        )
    return said


def kept_trial(cfg: DictConfig, sweep_id: str, trial: int, uri: str) -> dict[str, Any] | None:
    """In a resumed sweep: a FINISHED run of this job with this config, returned as the job's
    result (nothing trains); else every earlier attempt of the job is marked superseded."""
    client = MlflowClient(uri)
    attempts = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        f"tags.`labrun.sweep_id` = '{sweep_id}' and tags.`labrun.trial` = '{trial}'",
    )
    attempts = [r for r in attempts if r.data.tags.get("labrun.role") != "parent"]
    mine = config_hash(cfg)
    for run in attempts:
        tags = run.data.tags
        if run.info.status == "FINISHED" and tags.get(CONFIG_HASH_TAG) == mine:
            if SUPERSEDED_TAG in tags:
                continue
            log.info("trial %d: kept run %s (finished, same config)", trial, run.info.run_id)
            return {**run.data.metrics, "run_id": run.info.run_id, "kept": True}
    from labrun.errors import LabrunError
    from labrun.resume.stale import stale_reason

    for run in attempts:
        if run.info.status == "RUNNING":
            if not (gone := stale_reason(run)):
                raise LabrunError(
                    f"trial {trial} still runs in run {run.info.run_id}; continue the sweep "
                    "again when it has ended"
                )
            client.set_tag(run.info.run_id, "labrun.error", f"{gone}: killed")
            client.set_terminated(run.info.run_id, "KILLED")
        if SUPERSEDED_TAG not in run.data.tags:
            client.set_tag(run.info.run_id, SUPERSEDED_TAG, "trained again when the sweep resumed")
    return None
