"""Lightning's MLflow logger, writing into the run that labrun owns."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from mlflow.entities import Metric

from labrun.tracking.run import storing

log = logging.getLogger(__name__)
MAX_BATCH = 1000  # MLflow's limit on metrics per `log_batch`
_NOT_IN_A_NAME = re.compile(r"[^a-zA-Z0-9_/. -]+")  # Lightning's rule for MLflow metric names


def metric_name(key: str) -> str:
    """`key` as MLflow stores it: characters it refuses dropped, with a warning."""
    name = _NOT_IN_A_NAME.sub("", key)
    if name != key:
        rank_zero_warn(f"MLflow metric names allow only '_', '/', '.', ' ': {key} -> {name}")
    return name


class RunLogger(MLFlowLogger):
    """Streams metrics into an existing run and leaves the rest to `TrackedRun`.

    Lightning's logger would log hyperparameters cut at 250 characters and mark the run
    FINISHED after `fit`, before testing and artifacts; labrun records the full config itself and
    sets the final status only when everything is written. In a resumed run, `logged_through`
    holds each metric's last stored step: those steps are replayed by training but not stored
    twice.

    Metrics are buffered and written in one `log_batch` every `flush_every_s` seconds: a store
    round trip per training step (a SQLite commit, or an HTTP request to a server) would cost
    more than the step itself on a small model. The buffer is also written when fit or test
    ends, well or not, and by `determinism.ResumableState` as each checkpoint is written and
    each epoch starts, so a resume from any checkpoint finds every earlier step stored.
    """

    def __init__(
        self,
        *args: Any,
        logged_through: dict[str, int] | None = None,
        flush_every_s: float = 10.0,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.logged_through = dict(logged_through or {})
        self.flush_every_s = flush_every_s
        self._pending: list[Any] = []
        self._flushed_at = time.monotonic()

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        named = {metric_name(k): v for k, v in metrics.items() if not isinstance(v, str)}
        if self.logged_through and step is not None:  # stored names, so compare those
            named = {k: v for k, v in named.items() if step > self.logged_through.get(k, -1)}
        stamp = int(time.time() * 1000)
        self._pending += [
            Metric(key=k, value=float(v), timestamp=stamp, step=step or 0) for k, v in named.items()
        ]
        if (
            len(self._pending) >= MAX_BATCH
            or time.monotonic() - self._flushed_at >= self.flush_every_s
        ):
            self.flush()

    @rank_zero_only
    def flush(self) -> None:
        """Write every buffered metric to the store now."""
        while self._pending:  # what the store refused stays pending
            self.experiment.log_batch(self.run_id, metrics=self._pending[:MAX_BATCH])
            del self._pending[:MAX_BATCH]
        self._flushed_at = time.monotonic()

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        return

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        try:
            self.flush()
        except Exception as error:
            if status == "success":
                raise
            # training failed already: keep what can be kept, and that error
            log.warning("could not store the last %d metrics: %s", len(self._pending), error)

    @rank_zero_only
    def log_file(self, path: str | Path, artifact_dir: str | None = None) -> None:
        """Store a file (a sample grid, a plot) in the run as it trains."""
        with storing(
            Path(path).name, lambda: self.experiment.get_run(self.run_id).info.artifact_uri
        ):
            self.experiment.log_artifact(self.run_id, str(path), artifact_dir)
