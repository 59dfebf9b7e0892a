"""One MLflow run per task: created before any work, always closed with an honest status."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from lightning.pytorch.callbacks import Callback
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from labrun.errors import TrackingError
from labrun.tracking.secrets import (
    REDACTED,
    environment_secrets,
    is_secret_key,
    redact,
    scrub_text,
)

log = logging.getLogger(__name__)
# MLflow retries an unreachable server for minutes by default; fail within seconds instead.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
MAX_PARAM_LENGTH = 6000  # MLflow's limit; the full config is an artifact anyway


def check_reachable(uri: str, timeout_s: float) -> None:
    """Fail in seconds, with the fix, instead of MLflow's minutes of retries."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
                return
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(
                f"cannot reach the tracking server at {uri} ({reason}); start it, "
                "or point tracking.uri / MLFLOW_TRACKING_URI at a running one"
            ) from None
    elif uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted keys to string values, in key order, for MLflow params."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_LENGTH]
    return flat


def ensure_experiment(client: MlflowClient, name: str, artifact_root: str | None) -> str:
    """The id of experiment `name`, created with artifacts under `artifact_root/name` if new."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = (Path(artifact_root) / name).resolve().as_uri() if artifact_root else None
    return client.create_experiment(name, artifact_location=location)


def safe_values(items: Mapping[str, Any]) -> dict[str, str]:
    """Param or tag values as stored: redacted under a secret's key, scrubbed otherwise."""
    secrets = environment_secrets()  # read once: a config has hundreds of params
    return {
        k: REDACTED if is_secret_key(k.split(".")[-1]) else scrub_text(str(v), secrets=secrets)
        for k, v in items.items()
    }


def last_steps(client: MlflowClient, run: Any) -> dict[str, int]:
    """The last stored step of every metric of a run."""
    return {
        key: max(m.step for m in client.get_metric_history(run.info.run_id, key))
        for key in run.data.metrics
    }


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot), so a reused pid is not mistaken
    for the process that opened a run; None where /proc does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_tags() -> dict[str, str]:
    """Which process holds the run: `labrun runs --stale` checks it is still alive."""
    pid = os.getpid()
    return {
        "labrun.hostname": socket.gethostname(),
        "labrun.pid": str(pid),
        "labrun.pid_start": process_start(pid) or "",
        "labrun.heartbeat": str(int(time.time())),
    }


class Heartbeat(threading.Thread):
    """Stamps `labrun.heartbeat` on the run every `interval_s` while it is open, so that a run
    whose machine died can be told from one that is busy (a long epoch, a feature net)."""

    def __init__(self, client: MlflowClient, run_id: str, interval_s: float = 60.0) -> None:
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


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised at a safe point so that Lightning shuts down cleanly."""


class StopOnSignal(Callback):
    """Raises a pending SIGINT/SIGTERM between batches, never inside a tracking-store write."""

    def __init__(self, run: TrackedRun) -> None:
        self.run = run

    def on_train_batch_start(self, *args: Any) -> None:
        self.run.raise_if_signalled()

    def on_validation_batch_start(self, *args: Any) -> None:
        self.run.raise_if_signalled()

    def on_test_batch_start(self, *args: Any) -> None:
        self.run.raise_if_signalled()


class TrackedRun:
    """Context manager around one MLflow run.

    On exit the run is FINISHED, FAILED (with `traceback.txt` and an `labrun.error` tag) or
    KILLED (SIGINT or SIGTERM); never left RUNNING by an exception. A signal is only noted when
    it arrives, and raised at the next safe point (`raise_if_signalled`, or a batch boundary via
    `stop_callback`): raising inside an SQLite write would leave the store locked. A second
    signal raises at once.
    """

    def __init__(
        self,
        uri: str,
        experiment: str,
        artifact_root: str | None = None,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        connect_timeout_s: float = 10.0,
        resume_run_id: str | None = None,
    ) -> None:
        self.uri = uri
        self.resume_run_id = resume_run_id
        self.local_dir: str | None = None  # named in the error if the store is lost
        self.logged_through: dict[str, int] = {}  # metric -> last step stored (a resumed run)
        self._heartbeat: Heartbeat | None = None
        self.experiment = experiment
        self.artifact_root = artifact_root
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.connect_timeout_s = connect_timeout_s
        self.client: MlflowClient
        self.run_id = ""
        self.signal_received: int | None = None
        self._old_handlers: dict[int, Any] = {}

    def __enter__(self) -> TrackedRun:
        check_reachable(self.uri, self.connect_timeout_s)
        self.client = MlflowClient(tracking_uri=self.uri)
        tags = safe_values({**self.tags, **process_tags()})
        try:
            if self.resume_run_id:
                run = self.client.get_run(self.resume_run_id)
                self.client.update_run(run.info.run_id, status="RUNNING")
                if error := run.data.tags.get("labrun.error"):  # the stop this resume repairs
                    tags["labrun.resumed_after"] = error
                for stale in ("labrun.error", "labrun.stale", "labrun.signal"):
                    if stale in run.data.tags:
                        self.client.delete_tag(run.info.run_id, stale)
                self.set_tags_on(run.info.run_id, tags)
                self.logged_through = last_steps(self.client, run)
            else:
                exp_id = ensure_experiment(self.client, self.experiment, self.artifact_root)
                run = self.client.create_run(exp_id, run_name=self.run_name, tags=tags)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            verb = "reopen run " + self.resume_run_id if self.resume_run_id else "create a run"
            raise TrackingError(
                f"cannot {verb} in the tracking store {self.uri} ({first})"
            ) from None
        self.run_id = run.info.run_id
        self.run_name = run.info.run_name
        self._heartbeat = Heartbeat(self.client, self.run_id)
        self._heartbeat.start()
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[sig] = signal.signal(sig, self._on_signal)
        log.info(
            "MLflow run %s (%s) in experiment '%s' at %s",
            self.run_name,
            self.run_id,
            self.experiment,
            self.uri,
        )
        return self

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        first = self.signal_received is None
        self.signal_received = signum
        log.warning("received signal %d: stopping at the next batch boundary", signum)
        if not first:
            raise Interrupted(f"signal {signum}")

    def raise_if_signalled(self) -> None:
        if self.signal_received is not None:
            raise Interrupted(f"signal {self.signal_received}")

    def stop_callback(self) -> StopOnSignal:
        return StopOnSignal(self)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        if self._heartbeat is not None:
            self._heartbeat.stop()
        if exc is None or (
            isinstance(exc, SystemExit) and not exc.code and self.signal_received is None
        ):
            status = "FINISHED"
        elif self.signal_received is not None or isinstance(exc, KeyboardInterrupt):
            status = "KILLED"
        else:
            status = "FAILED"
        try:
            if status == "FAILED" and exc is not None:
                text = "".join(traceback.format_exception(exc_type, exc, tb))
                self.log_text(text, "traceback.txt")
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                self.set_tags({"labrun.error": f"{type(exc).__name__}: {first}"[:5000]})
            if status == "KILLED":
                self.client.set_tag(
                    self.run_id, "labrun.signal", str(self.signal_received or signal.SIGINT)
                )
            self.client.set_terminated(self.run_id, status)
        except Exception as lost:  # the store went away: say so, and how to go on
            cause = (str(lost).strip().splitlines() or [type(lost).__name__])[0][:200]
            where = f" in {self.local_dir}" if self.local_dir else ""
            raise TrackingError(
                f"lost the tracking store {self.uri} ({cause}); run {self.run_id} is left RUNNING "
                f"there and its checkpoints are kept{where}: when the store is back, "
                f"labrun resume {self.run_id}"
            ) from None
        log.info("MLflow run %s ended %s", self.run_id, status)
        if status == "KILLED" and self.signal_received is not None:
            raise SystemExit(128 + self.signal_received)  # the shell's convention: 143 for SIGTERM

    # -- recording: every text that reaches the store passes `secrets` first ---------------

    def log_params(self, params: Mapping[str, str]) -> None:
        items = [Param(k, v) for k, v in safe_values(params).items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100], synchronous=True)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.set_tags_on(self.run_id, tags)

    def set_tags_on(self, run_id: str, tags: Mapping[str, Any]) -> None:
        items = [RunTag(k, v) for k, v in safe_values(tags).items()]
        self.client.log_batch(run_id, tags=items)

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        """Log at `step`; a resumed run skips steps it had stored before it stopped."""
        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if step > self.logged_through.get(k, -1)
        ]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i : i + 1000])

    def log_file(self, path: str | Path, artifact_dir: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_dir)

    def log_dir(self, path: str | Path, artifact_dir: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(path), artifact_dir)

    def log_text(self, text: str, artifact_file: str, code: bool = False) -> None:
        """`code`: source text, whose `key = value` lines are kept (see `scrub_text`)."""
        self.client.log_text(self.run_id, scrub_text(text, assignments=not code), artifact_file)

    def log_dict(self, data: Any, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, redact(data), artifact_file)

    def log_files(self, paths: Iterable[Path], artifact_dir: str) -> None:
        for path in paths:
            self.log_file(path, artifact_dir)


class FollowerRun:
    """What ranks other than 0 hold instead of a `TrackedRun`: rank 0's run id, and no-op
    recording, so that one job makes one run whatever its number of processes."""

    def __init__(self) -> None:
        from labrun.ranks import RUN_ID_ENV

        self.run_id = os.environ.get(RUN_ID_ENV, "")
        self.logged_through: dict[str, int] = {}

    def __enter__(self) -> FollowerRun:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def raise_if_signalled(self) -> None:
        return None

    def stop_callback(self) -> Callback:
        return Callback()

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        return None
