"""A run's lifecycle pieces against a real store: the heartbeat thread stamps a live run."""

from __future__ import annotations

import time

from mlflow.tracking import MlflowClient

from labrun.resume.stale import STALE_AFTER_S, stale_reason
from labrun.tracking.heartbeat import HEARTBEAT_S, Heartbeat
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
