"""Lightning's MLflow logger, writing into the run that labrun owns."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only


class RunLogger(MLFlowLogger):
    """Streams metrics into an existing run and leaves the rest to `TrackedRun`.

    Lightning's logger would log hyperparameters cut at 250 characters and mark the run
    FINISHED after `fit`, before testing and artifacts; labrun records the full config itself and
    sets the final status only when everything is written. In a resumed run, `logged_through`
    holds each metric's last stored step: those steps are replayed by training but not stored
    twice.
    """

    def __init__(self, *args: Any, logged_through: dict[str, int] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.logged_through = dict(logged_through or {})

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        if self.logged_through and step is not None:
            metrics = {k: v for k, v in metrics.items() if step > self.logged_through.get(k, -1)}
        if metrics:
            super().log_metrics(metrics, step)

    @rank_zero_only
    def log_hyperparams(self, params: Any) -> None:
        return

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        return

    @rank_zero_only
    def log_file(self, path: str | Path, artifact_dir: str | None = None) -> None:
        """Store a file (a sample grid, a plot) in the run as it trains."""
        self.experiment.log_artifact(self.run_id, str(path), artifact_dir)
