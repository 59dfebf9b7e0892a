"""One MLflow run per task: created before any work, always closed with an honest status."""

from __future__ import annotations

import logging
import signal
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from labrun.errors import TrackingError
from labrun.store.client import check_reachable, ensure_experiment
from labrun.tracking.heartbeat import Heartbeat, process_tags, slurm_log_files
from labrun.tracking.params import safe_values
from labrun.tracking.secrets import redact, scrub_text

log = logging.getLogger(__name__)


def last_steps(client: MlflowClient, run: Any) -> dict[str, int]:
    """The last stored step of every metric of a run."""
    return {
        key: max(m.step for m in client.get_metric_history(run.info.run_id, key))
        for key in run.data.metrics
    }


@contextmanager
def storing(what: str, artifact_uri: str | Callable[[], str]) -> Iterator[None]:
    """An artifact the disk cannot take (full, read-only) is a line naming it and where; MLflow
    writes each file to a temporary name first, so no half-written file is left as whole."""
    try:
        yield
    except OSError as exc:
        where = artifact_uri if isinstance(artifact_uri, str) else artifact_uri()
        raise TrackingError(
            f"cannot store the artifact '{what}' in {where}: "
            f"{exc.strerror or exc}; free space there or point tracking.artifact_root at "
            "another folder"
        ) from exc


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised at a safe point so that Lightning shuts down cleanly."""


class Requeued(SystemExit):
    """This process ends so that its requeued SLURM job continues the run (labrun.resume.
    requeue): the run is closed SCHEDULED, then `then` runs (the requeue). A SystemExit, so
    submitit writes no result for the job, which is not over."""

    def __init__(self, reason: str, then: Callable[[], None] | None = None) -> None:
        super().__init__(0)
        self.reason = reason
        self.then = then


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
    signal raises at once. One noted after the last safe point (while results are recorded)
    still ends the run KILLED and the process with 128 + signal: it is never swallowed.
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
        self.artifact_uri = run.info.artifact_uri
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

    def signalled(self, signum: int) -> None:
        """A signal someone else caught (labrun.resume.requeue), handled as this run's own."""
        self._on_signal(signum, None)

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
        if isinstance(exc, SIGTERMException) and self.signal_received is None:
            # Lightning's own handler (on SLURM) saw the SIGTERM first: a SystemExit without
            # a code, which used to close a scancel-ed run FINISHED
            self.signal_received = signal.SIGTERM
        if isinstance(exc, Requeued):
            status = "SCHEDULED"  # its requeued SLURM job reopens it
        elif self.signal_received is None and (
            exc is None or (isinstance(exc, SystemExit) and not exc.code)
        ):
            status = "FINISHED"
        elif self.signal_received is not None or isinstance(exc, KeyboardInterrupt):
            status = "KILLED"
        else:
            status = "FAILED"
        try:  # closed first: an artifact that cannot be written (a full disk) loses nothing
            if status == "FAILED" and exc is not None:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                self.set_tags({"labrun.error": f"{type(exc).__name__}: {first}"[:5000]})
            if status == "KILLED":
                self.client.set_tag(
                    self.run_id, "labrun.signal", str(self.signal_received or signal.SIGINT)
                )
            if isinstance(exc, Requeued):
                self.client.set_tag(self.run_id, "labrun.requeued", exc.reason)
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
        self._store_after_closing(
            "".join(traceback.format_exception(exc_type, exc, tb)) if status == "FAILED" else None
        )
        if isinstance(exc, Requeued) and exc.then is not None:
            exc.then()
        if status == "KILLED" and self.signal_received is not None:
            raise SystemExit(128 + self.signal_received)  # the shell's convention: 143 for SIGTERM

    def _store_after_closing(self, traceback_text: str | None) -> None:
        """The traceback and, in a SLURM job, SLURM's stdout/stderr files of its tasks so far:
        stored once the run is closed, each failure a warning, not a lost status."""
        try:
            if traceback_text:
                self.log_text(traceback_text, "traceback.txt")
            for path in slurm_log_files():
                self.log_file(path, "slurm")
        except Exception as exc:
            log.warning("run %s: an artifact was not stored after closing: %s", self.run_id, exc)

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
        with storing(Path(path).name, self.artifact_uri):
            self.client.log_artifact(self.run_id, str(path), artifact_dir)

    def log_dir(self, path: str | Path, artifact_dir: str | None = None) -> None:
        with storing(artifact_dir or Path(path).name, self.artifact_uri):
            self.client.log_artifacts(self.run_id, str(path), artifact_dir)

    def log_text(self, text: str, artifact_file: str, code: bool = False) -> None:
        """`code`: source text, whose `key = value` lines are kept (see `scrub_text`)."""
        with storing(artifact_file, self.artifact_uri):
            self.client.log_text(self.run_id, scrub_text(text, assignments=not code), artifact_file)

    def log_dict(self, data: Any, artifact_file: str) -> None:
        with storing(artifact_file, self.artifact_uri):
            self.client.log_dict(self.run_id, redact(data), artifact_file)
