"""What SLURM says of a sweep's jobs: a run whose job SLURM ended (out of memory, cancelled,
time limit, node failure) is closed with SLURM's reason, never left RUNNING nor counted as
finished. The state comes from `sacct` where the cluster keeps accounting."""

from __future__ import annotations

import logging
import shutil
import subprocess

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
JOB_TAG = "labrun.slurm.job_id"
STATE_TAG = "labrun.slurm.state"
LIVE = {
    "PENDING",
    "RUNNING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SUSPENDED",
    "CONFIGURING",
    "COMPLETING",
    "SIGNALING",
    "STAGE_OUT",
    "PREEMPTED",  # requeued after it, where the partition requeues
}


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    """{job id: SLURM state} for these jobs (raw ids, as SLURM_JOB_ID); {} without sacct."""
    if not job_ids or shutil.which("sacct") is None:
        return {}
    try:
        done = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-o", "JobIDRaw,State", "-j", ",".join(job_ids)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    states = {}
    for line in done.stdout.splitlines() if done.returncode == 0 else []:
        job, _, state = line.partition("|")
        if state:
            states[job.strip()] = state.split()[0]  # "CANCELLED by 0" -> CANCELLED
    return states


def close_ended_jobs(client: MlflowClient, runs: list[Run]) -> int:
    """Close every RUNNING/SCHEDULED run whose SLURM job has ended (FAILED, or KILLED when
    cancelled) and tag every unfinished run with its job's final state; how many changed."""
    unfinished = [
        r
        for r in runs
        if r.info.status != "FINISHED" and JOB_TAG in r.data.tags and STATE_TAG not in r.data.tags
    ]
    states = sacct_states(sorted({r.data.tags[JOB_TAG] for r in unfinished}))
    closed = 0
    for run in unfinished:
        job = run.data.tags[JOB_TAG]
        state = states.get(job)
        if state is None or state in LIVE:
            continue
        client.set_tag(run.info.run_id, STATE_TAG, state)
        closed += 1
        if run.info.status in ("RUNNING", "SCHEDULED"):
            said = f"SLURM ended job {job} {state} before the run was closed"
            client.set_tag(run.info.run_id, "labrun.error", said)
            client.set_terminated(run.info.run_id, "KILLED" if state == "CANCELLED" else "FAILED")
            log.error("run %s: %s", run.info.run_id, said)
    return closed
