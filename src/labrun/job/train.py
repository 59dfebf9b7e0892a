"""The train task: compose -> instantiate -> fit -> test -> record, in one MLflow run."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from labrun.config.targets import check_targets
from labrun.contracts import DataModule, Exports, Prepares, require
from labrun.job import determinism, ranks
from labrun.job.build import build, build_trainer
from labrun.job.checks import check_model_kwargs, optional_hooks
from labrun.quiet import quiet
from labrun.resume import requeue
from labrun.resume.state import ResumableState
from labrun.tracking import system
from labrun.tracking.logger import RunLogger
from labrun.tracking.record import (
    open_run,
    record_config,
    record_data,
    record_numerics,
    record_provenance,
    record_results,
    record_resume,
)
from labrun.tracking.trajectory import Trajectory

log = logging.getLogger(__name__)
# Testing uses the first ModelCheckpoint (the ranked one); the second only serves `resume`.
warnings.filterwarnings("ignore", message=r".*multiple `ModelCheckpoint` callbacks.*")


def train(
    cfg: DictConfig,
    callbacks: list[Any] | None = None,
    tags: dict[str, str] | None = None,
    resume_run_id: str | None = None,
) -> dict[str, Any]:
    """One run: `callbacks` join the config's (a sweep's pruner), `tags` mark it (a trial).

    With `resume_run_id`, training continues from `cfg.ckpt_path` inside that run: its config is
    already recorded, metrics go on from the last stored step, and this process's provenance is
    added beside the original's. Returns the final metrics and `run_id`.
    """
    quiet()  # after Hydra set up logging: Lightning's lines join it
    check_targets(cfg)
    determinism.apply(cfg.seed, cfg.threads)
    leader = ranks.is_rank_zero()  # other DDP ranks train too, but record nothing
    run_scope = open_run(cfg, "train", tags, resume_run_id) if leader else ranks.FollowerRun()
    with ranks.job_scope(), run_scope as run:
        if leader:
            record_start(run, cfg, resume_run_id)
        dm = build(cfg.data)
        require(dm, DataModule, "data")
        dm.prepare_data()
        dm.setup("fit")
        if leader:
            record_data(run, dm)
        run.raise_if_signalled()
        check_model_kwargs(cfg.model, dm.model_kwargs())
        model = build(cfg.model, **dm.model_kwargs())
        for note in optional_hooks(model) if leader else []:
            log.warning(note)
        run.log_metrics({"model/params": trainable_parameters(model)})
        if isinstance(model, Prepares):  # e.g. the GAN's feature space, before any RNG use
            run.log_metrics(model.prepare(dm, cfg.paths.run_dir))
        extra = [
            trajectory := Trajectory(int(cfg.tracking.get("fingerprint_every", 50))),
            run.stop_callback(),
            determinism.ReseedEachBatch(cfg.seed),
            ResumableState(cfg.seed),
            *(callbacks or []),
            *requeue.callbacks(run),
        ]
        trainer = build_trainer(cfg, run.run_id, extra, run.logged_through)
        if leader and trainer.world_size > 1:
            os.environ[ranks.RUN_ID_ENV] = run.run_id
            ranks.relaunch_this_job(cfg)
        with system.sampling(run.run_id, cfg.tracking.uri, system.every_s(cfg, leader)):
            metrics, checkpoints = fit_and_test(trainer, model, dm, cfg, run)
        if not leader:
            return metrics
        if not any(isinstance(lg, RunLogger) for lg in trainer.loggers):  # else streamed already
            tested = {k: v for k, v in metrics.items() if k.startswith("test/")}
            run.log_metrics(tested, step=trainer.global_step)
        run.raise_if_signalled()
        record_numerics(run, trajectory, first_process=not resume_run_id)
        exported = model.export(dm) if isinstance(model, Exports) else None
        record_results(run, cfg, checkpoints, model, dm, metrics, exported)
        register_run(run, cfg, tags or {})
        log.info("final metrics: %s", json.dumps(metrics, sort_keys=True))
        return {**metrics, "run_id": run.run_id}


def trainable_parameters(model: Any) -> int:
    """What a multi-objective search can trade accuracy for (`model/params`)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def register_run(run: Any, cfg: DictConfig, tags: dict[str, str]) -> None:
    """tracking.register_as: this run's model as the next version of that registered model,
    alias best. Not a sweep's trial (the sweep registers its best) nor a rerun (it checks a
    run and publishes nothing)."""
    from labrun.store.registry import register

    name = cfg.tracking.get("register_as")
    if not name or {"labrun.trial", "labrun.rerun_of"} & set(tags):
        return
    version = register(run.client, run.run_id, name)
    log.info("registered %s version %s (alias best)", name, version.version)


def record_start(run: Any, cfg: DictConfig, resume_run_id: str | None) -> None:
    """What rank 0 records before any work: the config and provenance (resumed: the resume);
    in a SLURM job, the job folder names the run for the job's requeue."""
    run.local_dir = str(cfg.paths.output_dir)
    if requeue.in_slurm_job():
        requeue.remember_job_run(cfg.paths.output_dir, run.run_id)
    if resume_run_id:
        record_resume(run, cfg)
    else:
        record_config(run, cfg)
        record_provenance(run, cfg)


def fit_and_test(
    trainer: Any, model: Any, dm: Any, cfg: DictConfig, run: Any
) -> tuple[dict[str, float], dict[str, str]]:
    """Fit, then test the best-validation checkpoint; the metrics and the checkpoint paths."""
    trainer.fit(model, datamodule=dm, ckpt_path=cfg.ckpt_path)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    ckpt = trainer.checkpoint_callback  # read now: testing restores its state from `best`
    checkpoints = {"best": ckpt.best_model_path, "last": ckpt.last_model_path} if ckpt else {}
    run.raise_if_signalled()  # a signal during the last epoch: no test, no model
    if cfg.test:
        best = "best" if Path(checkpoints.get("best") or "").is_file() else None
        for result in trainer.test(model, datamodule=dm, ckpt_path=best, verbose=False):
            metrics.update({k: float(v) for k, v in result.items()})
    return metrics, checkpoints
