"""`labrun train [OVERRIDES]`: compose a config, train, test and record one MLflow run (`-m`:
one run per job of a grid, under one parent run)."""

from __future__ import annotations

import time
from typing import Any

import hydra
from omegaconf import DictConfig

from labrun.cli.common import run_task
from labrun.config.compose import config_dir, register_resolvers
from labrun.job.train import train
from labrun.resume.requeue import continued_run
from labrun.sweep.detach import close_if_last_job
from labrun.sweep.multirun import kept_job, multirun_tags, record_failed_start

register_resolvers()


def job(cfg: DictConfig) -> dict[str, Any]:
    """One run; in a SLURM job that was requeued, its run continued; in a resumed sweep, a trial
    that already finished with this config is kept, not trained again; in a detached sweep,
    the last job to end closes the sweep; a job that fails before its run opens leaves a FAILED
    run for its trial all the same."""
    try:
        resume_run_id = continued_run(cfg)
        if resume_run_id is None and (kept := kept_job(cfg)):
            return kept
        started_ms = int(time.time() * 1000)
        try:
            return train(cfg, tags=multirun_tags(), resume_run_id=resume_run_id)
        except Exception as exc:
            if resume_run_id is None:  # a new run: unless it opened, one must say it failed
                record_failed_start(cfg, exc, started_ms)
            raise
    finally:
        close_if_last_job()  # a detached sweep's last job closes it


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> None:
    run_task(job, cfg)
