"""Hydra multirun as one MLflow parent run: created before the first job, summarised after."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from labrun.tracking.sweeps import open_parent, read_parent_file, summarize, write_parent_file

log = logging.getLogger(__name__)
failed_sweeps: list[str] = []  # read by the CLI for its exit code


def _tracking(config: DictConfig) -> tuple[str, str, str | None]:
    t = config.tracking
    experiment = config.hydra.runtime.choices.get("experiment") or "default"
    return t.uri, experiment, t.artifact_root


class MultirunParent(Callback):
    """The parent run's id travels to the jobs in a file in the sweep folder, so jobs in other
    processes (the joblib launcher, a cluster) find it too."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        uri, experiment, artifact_root = _tracking(config)
        overrides = list(config.hydra.overrides.task)
        text = OmegaConf.to_yaml({"overrides": overrides})
        parent = open_parent(uri, experiment, artifact_root, sweep_dir.name, "multirun", text)
        write_parent_file(sweep_dir, {"run_id": parent, "sweep_id": sweep_dir.name, "uri": uri})
        log.info("sweep %s: parent run %s", sweep_dir.name, parent)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        info = read_parent_file(config.hydra.sweep.dir)
        if info is None:
            return
        objective = config.objective
        summary = summarize(
            info["uri"], info["run_id"], info["sweep_id"], objective.metric, objective.direction
        )
        best = summary["best"]
        log.info(
            "sweep %s: %d trials, %d failed; best %s = %s (%s)",
            info["sweep_id"],
            summary["trials"],
            summary["failed"],
            objective.metric,
            best and best[objective.metric],
            best and best["run"],
        )
        if summary["failed"]:
            failed_sweeps.append(info["sweep_id"])
