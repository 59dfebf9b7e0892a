"""Hydra multirun as one MLflow parent run: created before the first job, summarised after."""

from __future__ import annotations

import atexit
import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from labrun.sweep.parent import (
    child_tags,
    open_parent,
    read_parent_file,
    summarize,
    write_parent_file,
)

log = logging.getLogger(__name__)


def _tracking(config: DictConfig) -> tuple[str, str, str | None]:
    t = config.tracking
    experiment = config.hydra.runtime.choices.get("experiment") or "default"
    return t.uri, experiment, t.artifact_root


class OneSacctWarning(logging.Filter):
    """submitit polls `sacct` and warns at every poll where the cluster keeps no accounting (the
    one-node cluster of `make slurm`); one warning says it, the rest are dropped."""

    seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "Bypassing sacct error" not in record.getMessage():
            return True
        first, OneSacctWarning.seen = not OneSacctWarning.seen, True
        if first:
            log.warning("sacct fails here (no SLURM accounting): job states come from squeue")
        return False


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
        # A launcher that fails (a bad hydra.launcher value, Ctrl-C) skips on_multirun_end:
        # the parent is then closed FAILED when the process exits, never left RUNNING.
        self.open_parent: tuple[str, str] | None = (uri, parent)
        atexit.register(self.fail_if_open)
        logging.getLogger("submitit").addFilter(OneSacctWarning())

    def fail_if_open(self) -> None:
        if getattr(self, "open_parent", None) is None:
            return
        from mlflow.tracking import MlflowClient

        uri, parent = self.open_parent
        self.open_parent = None
        client = MlflowClient(uri)
        client.set_tag(parent, "labrun.error", "the sweep stopped before its jobs ended")
        client.set_terminated(parent, "FAILED")
        print(
            f"labrun: error: the sweep stopped early; its parent run {parent} is FAILED",
            file=sys.stderr,
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.open_parent = None  # summarize closes it
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
            # Hydra gives callbacks no way to set the exit code, and this is the last thing the
            # multirun does: the sweep ends here, with its one line, after its parent is closed.
            print(
                f"labrun: error: sweep {info['sweep_id']} had failed trials; its parent run "
                f"{info['run_id']} lists them",
                file=sys.stderr,
            )
            raise SystemExit(1)


def multirun_tags() -> dict[str, str]:
    """Child-run tags for a job of a Hydra multirun, whose parent `MultirunParent` opened."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return {}
    info = read_parent_file(HydraConfig.get().sweep.dir)
    if info is None:
        return {}
    return child_tags(info["run_id"], info["sweep_id"], HydraConfig.get().job.num)
