"""Lightning's MLflow logger, writing into the run that labrun owns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only


class RunLogger(MLFlowLogger):
    """Streams metrics into an existing run and leaves the rest to `TrackedRun`.

    Lightning's logger would log hyperparameters cut at 250 characters and mark the run
    FINISHED after `fit`, before testing and artifacts; labrun records the full config itself and
    sets the final status only when everything is written.
    """

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
