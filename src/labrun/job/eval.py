"""The eval task: test a trained model, from a run id or a checkpoint file, into a new run."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, open_dict

from labrun.config.targets import check_targets
from labrun.contracts import DataModule, Prepares, require
from labrun.errors import ConfigError, TrackingError
from labrun.job import determinism
from labrun.job.build import build, build_trainer
from labrun.job.checks import check_model_kwargs
from labrun.quiet import quiet
from labrun.tracking.record import (
    open_run,
    record_config,
    record_data,
    record_provenance,
    record_results,
)

log = logging.getLogger(__name__)


def fetch_run(cfg: DictConfig, run_id: str, into: Path) -> tuple[DictConfig, Path, str]:
    """The stored config, best checkpoint and experiment name of a finished run."""
    from labrun.store.artifacts import download, stored_config
    from labrun.store.client import client_for, get_run

    client = client_for(cfg.tracking.uri)
    run = get_run(client, run_id)
    experiment = client.get_experiment(run.info.experiment_id).name
    config = stored_config(client, run_id, into, list(cfg.allowed_targets))
    for name in ("best.ckpt", "last.ckpt"):
        if ckpt_path := download(client, run_id, f"checkpoints/{name}", into):
            return config, ckpt_path, experiment
    raise TrackingError(f"run '{run_id}' has no checkpoint artifact to evaluate")


def evaluate(cfg: DictConfig, tags: dict[str, str] | None = None) -> dict[str, Any]:
    """Test `cfg.run_id`'s best checkpoint (or `cfg.ckpt_path`); returns metrics and `run_id`."""
    if not cfg.run_id and not cfg.ckpt_path:
        raise ConfigError("eval needs run_id=<MLflow run id> or ckpt_path=<checkpoint file>")
    quiet()  # after Hydra set up logging: Lightning's lines join it
    with tempfile.TemporaryDirectory() as tmp:
        ckpt_path = Path(cfg.ckpt_path) if cfg.ckpt_path else None
        if cfg.run_id:
            stored, ckpt_path, experiment = fetch_run(cfg, cfg.run_id, Path(tmp))
            with open_dict(cfg):
                cfg.seed = stored.get("seed", cfg.seed)  # the run's name and params say its seed
                cfg.data = stored.data
                cfg.model = stored.model
                cfg.data.data_dir = cfg.paths.data_dir  # the data may live elsewhere now
                cfg.tracking.experiment = experiment
                cfg.tracking.tags = {**cfg.tracking.tags, "labrun.source_run": cfg.run_id}
            check_targets(cfg, allowed=list(cfg.allowed_targets))
        determinism.apply(cfg.seed, cfg.threads)
        assert ckpt_path is not None
        if not ckpt_path.is_file():
            raise ConfigError(f"ckpt_path {ckpt_path} is not a file")
        try:
            checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # not a checkpoint, truncated, or written by something else
            raise ConfigError(
                f"ckpt_path {ckpt_path} is not a readable checkpoint ({type(exc).__name__}); "
                "give a .ckpt file written by labrun train"
            ) from None
        with open_run(cfg, "eval", tags) as run:
            record_config(run, cfg)
            record_provenance(run, cfg)
            dm = build(cfg.data)
            require(dm, DataModule, "data")
            if state := checkpoint.get(type(dm).__qualname__):  # the training-time vocabulary
                dm.load_state_dict(state)
            dm.prepare_data()
            dm.setup("test")
            record_data(run, dm)
            check_model_kwargs(cfg.model, dm.model_kwargs())
            model = build(cfg.model, **dm.model_kwargs())
            if isinstance(model, Prepares):
                run.log_metrics(model.prepare(dm, cfg.paths.run_dir))
            trainer = build_trainer(cfg, run.run_id, [run.stop_callback()])
            results = trainer.test(model, datamodule=dm, ckpt_path=str(ckpt_path), verbose=False)
            metrics: dict[str, Any] = {k: float(v) for r in results for k, v in r.items()}
            record_results(run, cfg, {}, model, dm, metrics, None)
            log.info("eval metrics: %s", metrics)
            metrics["run_id"] = run.run_id
            return metrics
