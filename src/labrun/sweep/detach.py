"""A detached sweep (`labrun train -m hydra/launcher=slurm ... --detach`) closes itself: no
process waits for its jobs. Each job, as it ends, looks at the sweep in the store; the one that
finds nothing queued or running any more writes the parent's summary and closes it. A job that
SLURM killed outright (out of memory) cannot; `labrun sweep status` then closes the sweep from
SLURM's account of it."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from labrun.sweep.flags import DETACH_ENV
from labrun.sweep.parent import read_parent_file, summarize, write_parent_file
from labrun.sweep.status import sweep_state

log = logging.getLogger(__name__)
DETACHED_TAG = "labrun.detached"
CLAIM_FILE = ".labrun_closing"  # in the sweep folder: the one job that closes the parent


def detached() -> bool:
    return os.environ.get(DETACH_ENV) == "1"


def close_if_done(client: MlflowClient, parent: Run, sweep_dir: str | Path | None) -> bool:
    """Summarise and close a detached sweep whose jobs have all ended; True if this did it."""
    tags = parent.data.tags
    if parent.info.status != "RUNNING" or tags.get(DETACHED_TAG) != "1":
        return False
    state = sweep_state(client, parent)
    if state["counts"]["queued"] or state["counts"]["running"]:
        return False
    sweep_dir = sweep_dir or tags.get("labrun.sweep_dir")
    if sweep_dir and Path(sweep_dir).is_dir():  # two ending at once: the file's creator closes
        try:
            os.close(os.open(Path(sweep_dir) / CLAIM_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return False
    summary = summarize(
        client.tracking_uri,
        parent.info.run_id,
        tags["labrun.sweep_id"],
        tags.get("labrun.objective", "val/loss"),
        tags.get("labrun.direction", "minimize"),
    )
    log.info(
        "sweep %s closed by its last job: %d trials, %d failed",
        tags["labrun.sweep_id"],
        summary["trials"],
        summary["failed"],
    )
    return True


def close_if_last_job() -> None:
    """At the end of a job of a detached multirun (rank 0): close the sweep if it was the last."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from labrun.job import ranks

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    sweep_dir = HydraConfig.get().sweep.dir
    info = read_parent_file(sweep_dir)
    if not info or not info.get("detached") or not ranks.is_rank_zero():
        return
    client = MlflowClient(info["uri"])
    try:
        close_if_done(client, client.get_run(info["run_id"]), sweep_dir)
    except Exception:  # the job's own result is recorded already; say it, do not fail it
        log.exception("could not close sweep %s", info["sweep_id"])


def detach_now(uri: str, parent_id: str, sweep_dir: str | Path, signum: int) -> None:
    """The waiting process of a SLURM sweep is stopped (Ctrl-C, `kill`): its jobs go on in
    SLURM, so the sweep becomes a detached one, which its last job closes (this does, if none
    is left), and the person is told how to follow it or stop it."""
    info = read_parent_file(sweep_dir) or {}
    write_parent_file(sweep_dir, {**info, "detached": True})
    client = MlflowClient(uri)
    client.set_tag(parent_id, DETACHED_TAG, "1")
    close_if_done(client, client.get_run(parent_id), sweep_dir)
    sweep_id = info.get("sweep_id", Path(sweep_dir).name)
    print(
        f"labrun: signal {signum}: sweep {sweep_id} goes on in SLURM without this process; "
        f"follow it with: labrun sweep status {sweep_id} --wait (scancel its jobs to stop them)",
        file=sys.stderr,
    )
