"""A run's lifecycle pieces against a real store: the heartbeat thread stamps a live run, and
a signal is never swallowed."""

from __future__ import annotations

import os
import signal
import time

import pytest
from mlflow.tracking import MlflowClient

from labrun.resume.stale import STALE_AFTER_S, stale_reason
from labrun.tracking.heartbeat import HEARTBEAT_S, Heartbeat
from labrun.tracking.run import TrackedRun
from tests.helpers import wait_for


def test_the_heartbeat_thread_stamps_the_run_until_stopped(store: str) -> None:
    client = MlflowClient(store)
    run_id = client.create_run(client.create_experiment("beats")).info.run_id
    client.set_tag(run_id, "labrun.heartbeat", "0")
    beat = Heartbeat(client, run_id, interval_s=0.2)
    started = int(time.time())
    beat.start()
    try:
        stamp = wait_for(
            lambda: int(client.get_run(run_id).data.tags["labrun.heartbeat"]), 30, "a heartbeat"
        )
        assert started <= stamp <= int(time.time())
    finally:
        beat.stop()
    assert not beat.is_alive()
    last = client.get_run(run_id).data.tags["labrun.heartbeat"]
    time.sleep(1.0)  # five intervals: a stopped heartbeat stamps nothing more
    assert client.get_run(run_id).data.tags["labrun.heartbeat"] == last


def test_a_run_elsewhere_is_stale_after_ten_missed_heartbeats(store: str) -> None:
    assert STALE_AFTER_S == 10 * HEARTBEAT_S == 600
    client = MlflowClient(store)
    run_id = client.create_run(client.create_experiment("elsewhere")).info.run_id
    client.set_tag(run_id, "labrun.hostname", "another-host")
    client.set_tag(run_id, "labrun.heartbeat", str(int(time.time() - STALE_AFTER_S + 60)))
    assert stale_reason(client.get_run(run_id)) is None  # nine missed: may be busy
    client.set_tag(run_id, "labrun.heartbeat", str(int(time.time() - STALE_AFTER_S - 60)))
    reason = stale_reason(client.get_run(run_id))
    assert reason is not None and reason.startswith("no heartbeat on another-host for 11 min")


def test_a_signal_after_the_last_safe_point_ends_the_run_killed(store: str) -> None:
    """SIGTERM while a run records its results (after its last batch, so nothing raises it):
    the run ends KILLED and the process exits 143. It used to end FINISHED and go on, so a
    `kill` of a search that landed there was lost and the search ran to its end."""
    before = signal.getsignal(signal.SIGTERM)
    run = TrackedRun(store, "late-signal")
    with pytest.raises(SystemExit) as stopped, run:
        os.kill(os.getpid(), signal.SIGTERM)  # noted by the run's handler, not raised
        run.log_metrics({"recorded": 1.0})  # the recording goes on to its end
    assert stopped.value.code == 143
    closed = MlflowClient(store).get_run(run.run_id)
    assert closed.info.status == "KILLED" and closed.data.tags["labrun.signal"] == "15"
    assert closed.data.metrics["recorded"] == 1.0
    assert signal.getsignal(signal.SIGTERM) is before  # the old handler is back


def test_lightnings_own_sigterm_exit_ends_the_run_killed(store: str) -> None:
    """On SLURM, Lightning's signal handler can see a `scancel` first and end `fit` with its
    SIGTERMException, a SystemExit without a code: the run ended FINISHED and the job exit 0."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    run = TrackedRun(store, "lightning-sigterm")
    with pytest.raises(SystemExit) as stopped, run:
        raise SIGTERMException
    assert stopped.value.code == 143
    closed = MlflowClient(store).get_run(run.run_id)
    assert closed.info.status == "KILLED" and closed.data.tags["labrun.signal"] == "15"
