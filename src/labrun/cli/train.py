"""`labrun train [OVERRIDES]`: compose a config, train, test and record one MLflow run (`-m`:
one run per job of a grid, under one parent run)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from labrun.cli.common import run_task
from labrun.config.compose import config_dir, register_resolvers
from labrun.job.train import train
from labrun.resume.requeue import continued_run
from labrun.sweep.multirun import multirun_tags

register_resolvers()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> None:
    run_task(lambda c: train(c, tags=multirun_tags(), resume_run_id=continued_run(c)), cfg)
