"""What SLURM says of a sweep's jobs: a run whose job SLURM ended (out of memory, cancelled,
time limit, node failure) is closed with SLURM's reason, never left RUNNING nor counted as
finished. The state comes from `sacct` where the cluster keeps accounting."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
JOB_TAG = "labrun.slurm.job_id"
STATE_TAG = "labrun.slurm.state"
REASON_TAG = "labrun.slurm.reason"
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


# What slurmstepd writes in a job's stderr when it stops the job: the reason where `sacct`
# says only FAILED (a memory limit enforced by jobacct_gather, without cgroups, is FAILED).
REASONS = re.compile(
    r"(\S*exceeded (?:job |step )?memory limit.*|.*oom[-_ ]kill.*|\*\*\* .* CANCELLED AT .*)",
    re.IGNORECASE,
)


def log_files(run: Run, sweep_dir: str | None) -> list[Path]:
    """The SLURM stdout/stderr files of a run's job, found in its sweep's submitit folder."""
    tags = run.data.tags
    if not sweep_dir or not Path(sweep_dir).is_dir():
        return []
    names = [tags.get(JOB_TAG)]
    if "labrun.slurm.array_job_id" in tags:
        names.insert(
            0, f"{tags['labrun.slurm.array_job_id']}_{tags.get('labrun.slurm.array_task_id')}"
        )
    for name in filter(None, names):
        found = sorted(Path(sweep_dir).glob(f".submitit/**/{name}_*_log.*"))
        if found:
            return found
    return []


def log_reason(files: list[Path]) -> str | None:
    """slurmstepd's word on the job, from its stderr files: the fullest line it wrote
    ("StepId=48.0 exceeded memory limit (3431841792 > 3221225472), being killed")."""
    said: list[str] = []
    for path in files:
        if path.suffix == ".err":
            for line in path.read_text(errors="replace").splitlines():
                if found := REASONS.search(line):
                    said.append(found.group(1).strip(" *"))
    return max(said, key=len) if said else None


def close_ended_jobs(client: MlflowClient, runs: list[Run], sweep_dir: str | None = None) -> int:
    """Close every RUNNING/SCHEDULED run whose SLURM job has ended (FAILED, or KILLED when
    cancelled) with SLURM's state and, from the job's log, its reason (its logs stored as the
    run's `slurm/` artifacts); tag every unfinished run with its job's final state; how many
    changed."""
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
            files = log_files(run, sweep_dir)
            reason = log_reason(files)
            said = f"SLURM ended job {job} {state}" + (f": {reason}" if reason else "")
            if reason:
                client.set_tag(run.info.run_id, REASON_TAG, reason)
            for path in files:  # what the run could not store itself
                client.log_artifact(run.info.run_id, str(path), "slurm")
            client.set_tag(run.info.run_id, "labrun.error", said)
            client.set_terminated(run.info.run_id, "KILLED" if state == "CANCELLED" else "FAILED")
            log.error("run %s: %s", run.info.run_id, said)
    return closed
