"""`labrun eval run_id=<id>|ckpt_path=<file> [OVERRIDES]`: test a trained model into a new run."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from labrun.cli.common import run_task
from labrun.config.compose import config_dir, register_resolvers
from labrun.job.eval import evaluate
from labrun.sweep.multirun import multirun_tags

register_resolvers()


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="eval")
def main(cfg: DictConfig) -> None:
    run_task(lambda c: evaluate(c, tags=multirun_tags()), cfg)
