"""Which process holds a run, and a heartbeat while it lives: how `labrun runs --stale` tells
a run whose machine died from one that is busy."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
HEARTBEAT_S = 60.0  # how often a live run stamps `labrun.heartbeat`


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot), so a reused pid is not mistaken
    for the process that opened a run; None where /proc does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_tags() -> dict[str, str]:
    """Which process holds the run: `labrun runs --stale` checks it is still alive; under
    SLURM, which job (and how often it was requeued)."""
    pid = os.getpid()
    return {
        "labrun.hostname": socket.gethostname(),
        "labrun.pid": str(pid),
        "labrun.pid_start": process_start(pid) or "",
        "labrun.heartbeat": str(int(time.time())),
        **slurm_tags(),
    }


SLURM_TAGS = {  # tag -> SLURM's variable in a job's environment
    "labrun.slurm.job_id": "SLURM_JOB_ID",
    "labrun.slurm.array_job_id": "SLURM_ARRAY_JOB_ID",
    "labrun.slurm.array_task_id": "SLURM_ARRAY_TASK_ID",
    "labrun.slurm.nodelist": "SLURM_JOB_NODELIST",
    "labrun.slurm.ntasks": "SLURM_NTASKS",
    "labrun.slurm.partition": "SLURM_JOB_PARTITION",
}


def slurm_tags() -> dict[str, str]:
    """The SLURM job this process runs in (none outside one); `restart_count` counts requeues."""
    env = os.environ
    if "SLURM_JOB_ID" not in env:
        return {}
    tags = {tag: env[name] for tag, name in SLURM_TAGS.items() if name in env}
    tags["labrun.slurm.restart_count"] = env.get("SLURM_RESTART_COUNT", "0")
    return tags


class Heartbeat(threading.Thread):
    """Stamps `labrun.heartbeat` on the run every `interval_s` while it is open, so that a run
    whose machine died can be told from one that is busy (a long epoch, a feature net)."""

    def __init__(self, client: MlflowClient, run_id: str, interval_s: float = HEARTBEAT_S) -> None:
        super().__init__(name=f"labrun-heartbeat-{run_id[:8]}", daemon=True)
        self.client, self.run_id, self.interval_s = client, run_id, interval_s
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.interval_s):
            try:
                self.client.set_tag(self.run_id, "labrun.heartbeat", str(int(time.time())))
            except Exception as exc:  # a busy store skips one beat; the run goes on
                log.debug("heartbeat skipped: %s", exc)

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=5)


def slurm_log_files() -> list[Path]:
    """SLURM's stdout/stderr files of this job's tasks (submitit's `<job>_<task>_log.*`)."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm" or "SLURM_JOB_ID" not in os.environ:
        return []
    import submitit

    paths = submitit.JobEnvironment().paths
    job = paths.job_id
    return sorted(p for p in paths.folder.glob(f"{job}_*_log.*") if p.is_file())
