"""Stopping a local sweep loses no run.

A parallel grid (`hydra/launcher=parallel`) runs its jobs in joblib's worker processes. A
SIGTERM to the sweep process never reaches them, and when the sweep process stops with an
exception, joblib SIGKILLs them mid-run: their runs would stay RUNNING, or train on for an hour
with nobody waiting. So the sweep process stops on SIGINT/SIGTERM by closing its parent run and
exiting at once, and every job watches the sweep process: once it is gone, the job sends itself
a SIGTERM and ends KILLED at the next batch end, as any signalled run does; a job handed over
just before the sweep died does not start.

An Optuna search with `--workers N` starts its workers itself: when it stops (a signal, Ctrl-C,
a crash) it SIGTERMs them, waits for them and closes its parent (`labrun.sweep.search`). A
SLURM sweep's jobs go on without the process that waits for them: stopped, it detaches the
sweep instead (`labrun.sweep.detach.detach_now`).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any, NoReturn

log = logging.getLogger(__name__)
PID_KEY = "local_pid"  # in the parent file: the sweep process that the jobs watch
PROCESS_BACKENDS = (None, "loky", "multiprocessing")  # joblib's; "threading" runs them in here
WATCHER = "labrun-sweep-watch-"  # the watcher thread's name, the sweep's pid after it


def runs_jobs_in_processes(launcher: Any) -> bool:
    """Whether this launcher config runs the jobs in worker processes on this machine."""
    target = str(launcher.get("_target_", ""))
    return "joblib" in target.lower() and launcher.get("backend") in PROCESS_BACKENDS


def stop_on_signal(on_stop: Callable[[int], None]) -> None:
    """In the sweep process: SIGINT or SIGTERM runs `on_stop(signum)` (close or detach the
    parent run), then exits 128 + signal at once (a clean exit would let joblib SIGKILL the
    jobs; they stop on their own, and SLURM's go on)."""

    def stop(signum: int, frame: FrameType | None) -> None:
        try:
            on_stop(signum)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + signum)  # not SystemExit: joblib would SIGKILL the jobs

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)


def watch_sweep(info: dict[str, Any] | None, every_s: float = 0.5) -> None:
    """In a job of a local parallel sweep: a watcher that SIGTERMs this process once its sweep
    process is gone; if it is gone already, this worker exits without starting the job."""
    pid = int((info or {}).get(PID_KEY) or 0)
    if not pid or os.getpid() == pid:  # not such a sweep, or the job runs in the sweep process
        return
    if os.getppid() != pid:
        print(
            f"labrun: error: the sweep process {pid} is gone; this job does not start",
            file=sys.stderr,
        )
        leave()
    if watched_pid():  # one watcher per worker process serves all its jobs
        return

    def watch() -> None:
        while os.getppid() == pid:
            time.sleep(every_s)
        log.warning("the sweep process %d is gone: stopping this job", pid)
        os.kill(os.getpid(), signal.SIGTERM)
        threading.Event().wait()  # stays, naming the sweep for `leave_if_orphaned`

    threading.Thread(target=watch, name=f"{WATCHER}{pid}", daemon=True).start()


def watched_pid() -> int:
    """The sweep process this worker watches; 0 if none."""
    for thread in threading.enumerate():
        if thread.name.startswith(WATCHER):
            return int(thread.name[len(WATCHER) :])
    return 0


def leave_if_orphaned() -> None:
    """After a job: a worker whose sweep process is gone exits (nobody waits for its result,
    and joblib would keep it idle, holding the sweep's stderr open)."""
    if (pid := watched_pid()) and os.getppid() != pid:
        leave()


def leave() -> NoReturn:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signal.SIGTERM)


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """SIGTERM raises SystemExit(143) here, as it does inside a run, so that a search stopped
    between two trials still runs its cleanup (Python's default would end it on the spot)."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def stop_workers(procs: list[subprocess.Popen]) -> None:
    """SIGTERM to each worker still running; their trials end KILLED at the next batch end."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)


def why_stopped(exc: BaseException) -> str:
    """'signal 15', 'Ctrl-C' or the exception's first line."""
    if isinstance(exc, KeyboardInterrupt):
        return "Ctrl-C"
    if isinstance(exc, SystemExit) and isinstance(exc.code, int) and exc.code > 128:
        return f"signal {exc.code - 128}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def close_stopped(uri: str, parent: str, sweep_id: str, why: str) -> None:
    """A search stopped before its end: its parent FAILED, and the sweep's line."""
    from mlflow.tracking import MlflowClient

    reason = f"the sweep stopped ({why}); the same command continues it"
    client = MlflowClient(uri)
    client.set_tag(parent, "labrun.error", reason)
    client.set_terminated(parent, "FAILED")
    print(f"labrun: error: sweep {sweep_id}: {reason}; parent run {parent}", file=sys.stderr)
