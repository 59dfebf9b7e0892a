"""`labrun train`: compose -> instantiate -> fit -> test -> record."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from labrun import determinism, ranks, schema
from labrun.compose import build, build_trainer, config_dir, register_resolvers
from labrun.tracking.logger import RunLogger
from labrun.tracking.record import (
    open_run,
    record_config,
    record_data,
    record_provenance,
    record_results,
    record_resume,
)
from labrun.tracking.run import FollowerRun

log = logging.getLogger(__name__)
# Testing uses the first ModelCheckpoint (the ranked one); the second only serves `resume`.
warnings.filterwarnings("ignore", message=r".*multiple `ModelCheckpoint` callbacks.*")
register_resolvers()
schema.register_schemas()


def train(
    cfg: DictConfig,
    callbacks: list[Any] | None = None,
    tags: dict[str, str] | None = None,
    resume_run_id: str | None = None,
) -> dict[str, float]:
    """One run: `callbacks` join the config's (a sweep's pruner), `tags` mark it (a trial).

    With `resume_run_id`, training continues from `cfg.ckpt_path` inside that run: its config is
    already recorded, metrics go on from the last stored step, and this process's provenance is
    added beside the original's.
    """
    schema.check_targets(cfg)
    determinism.apply(cfg.seed, cfg.threads)
    leader = ranks.is_rank_zero()  # other DDP ranks train too, but record nothing
    run_scope = open_run(cfg, "train", tags, resume_run_id) if leader else FollowerRun()
    if leader:
        run_scope.local_dir = str(cfg.paths.output_dir)
    with ranks.job_scope(), run_scope as run:
        if leader and resume_run_id:
            record_resume(run, cfg)
        elif leader:
            record_config(run, cfg)
            record_provenance(run, cfg)
        dm = build(cfg.data)
        dm.prepare_data()
        dm.setup("fit")
        if leader:
            record_data(run, dm)
        run.raise_if_signalled()
        model = build(cfg.model, **dm.model_kwargs())
        if hasattr(model, "prepare"):  # e.g. the GAN's feature space for FID, before any RNG use
            run.log_metrics(model.prepare(dm, cfg.paths.run_dir))
        extra = [run.stop_callback(), determinism.ResumableState(cfg.seed), *(callbacks or [])]
        trainer = build_trainer(cfg, run.run_id, extra, run.logged_through)
        if leader and trainer.world_size > 1:
            os.environ[ranks.RUN_ID_ENV] = run.run_id
            ranks.relaunch_this_job(cfg)
        trainer.fit(model, datamodule=dm, ckpt_path=cfg.ckpt_path)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        ckpt = trainer.checkpoint_callback  # read now: testing restores its state from `best`
        checkpoints = {"best": ckpt.best_model_path, "last": ckpt.last_model_path} if ckpt else {}
        run.raise_if_signalled()  # a signal during the last epoch: no test, no model
        if cfg.test:
            best = "best" if Path(checkpoints.get("best") or "").is_file() else None
            for result in trainer.test(model, datamodule=dm, ckpt_path=best, verbose=False):
                metrics.update({k: float(v) for k, v in result.items()})
        if not leader:
            return metrics
        if not any(isinstance(lg, RunLogger) for lg in trainer.loggers):  # else streamed already
            run.log_metrics(
                {k: v for k, v in metrics.items() if k.startswith("test/")},
                step=trainer.global_step,
            )
        run.raise_if_signalled()
        exported = model.export(dm) if hasattr(model, "export") else None
        record_results(run, cfg, checkpoints, model, dm, metrics, exported)
        log.info("final metrics: %s", json.dumps(metrics, sort_keys=True))
        metrics["run_id"] = run.run_id  # type: ignore[assignment]
        return metrics


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> None:
    from labrun.cli import run_task

    run_task(train, cfg)
