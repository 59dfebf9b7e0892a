"""Runs left RUNNING by a process that is gone (SIGKILL, a lost node, a power cut)."""

from __future__ import annotations

import os
import socket
import time

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from labrun.tracking.heartbeat import HEARTBEAT_S, process_start
from labrun.tracking.secrets import scrub_text

STALE_AFTER_S = 10 * HEARTBEAT_S  # ten missed heartbeats


def stale_reason(run: Run, stale_after_s: float = STALE_AFTER_S) -> str | None:
    """Why a RUNNING run's process is gone, or None when it may still be alive.

    On this host the process id (and its start time, against pid reuse) says for certain.
    Elsewhere, the heartbeat: a live run stamps it every minute.
    """
    if run.info.status != "RUNNING":
        return None
    tags = run.data.tags
    host, pid = tags.get("labrun.hostname"), tags.get("labrun.pid")
    if host == socket.gethostname() and pid and pid.isdigit():
        started = process_start(int(pid))
        if started is None and not _alive(int(pid)):
            return f"process {pid} on {host} is gone"
        if started is not None and tags.get("labrun.pid_start") not in ("", None, started):
            return f"process {pid} on {host} is gone (the id now belongs to another process)"
        return None
    beat = tags.get("labrun.heartbeat")
    last = float(beat) if beat and beat.isdigit() else run.info.start_time / 1000
    age = time.time() - last
    if age > stale_after_s:
        where = f" on {host}" if host else ""
        return f"no heartbeat{where} for {age / 60:.0f} min"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_stale(client: MlflowClient, run: Run, reason: str) -> None:
    """FAILED, with the reason; `labrun resume` can still continue it from its checkpoints."""
    client.set_tag(run.info.run_id, "labrun.error", scrub_text(f"stale: {reason}"))
    client.set_tag(run.info.run_id, "labrun.stale", "1")
    client.set_terminated(run.info.run_id, "FAILED")
