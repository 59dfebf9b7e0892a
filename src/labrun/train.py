"""`labrun train`: compose -> instantiate -> fit -> test -> record."""

from __future__ import annotations

import copy
import json
import logging

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from labrun import determinism, schema
from labrun.compose import build_trainer, config_dir, register_resolvers
from labrun.models import TextClassifierPipeline
from labrun.tracking.logger import RunLogger
from labrun.tracking.record import (
    open_run,
    record_config,
    record_data,
    record_provenance,
    record_results,
)

log = logging.getLogger(__name__)
register_resolvers()
schema.register_schemas()


def train(cfg: DictConfig) -> dict[str, float]:
    schema.check_targets(cfg)
    determinism.apply(cfg.seed, cfg.threads)
    with open_run(cfg, "train") as run:
        record_config(run, cfg)
        record_provenance(run, cfg)
        dm = instantiate(cfg.data)
        dm.prepare_data()
        dm.setup("fit")
        record_data(run, dm)
        run.raise_if_signalled()
        model = instantiate(cfg.model, vocab_size=dm.vocab_size, num_classes=dm.num_classes)
        trainer = build_trainer(cfg, run.run_id, [run.stop_callback()])
        trainer.fit(model, datamodule=dm, ckpt_path=cfg.ckpt_path)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        ckpt = trainer.checkpoint_callback  # read now: testing restores its state from `best`
        checkpoints = {"best": ckpt.best_model_path, "last": ckpt.last_model_path} if ckpt else {}
        run.raise_if_signalled()  # a signal during the last epoch: no test, no model
        if cfg.test:
            best = "best" if checkpoints.get("best") else None
            for result in trainer.test(model, datamodule=dm, ckpt_path=best, verbose=False):
                metrics.update({k: float(v) for k, v in result.items()})
        if not any(isinstance(lg, RunLogger) for lg in trainer.loggers):  # else streamed already
            run.log_metrics(
                {k: v for k, v in metrics.items() if k.startswith("test/")},
                step=trainer.global_step,
            )
        run.raise_if_signalled()
        pipeline = TextClassifierPipeline(
            copy.deepcopy(model.net).cpu().eval(), dm.preprocessor, dm.class_names
        )
        record_results(run, cfg, checkpoints, model, dm, metrics, pipeline)
        log.info("final metrics: %s", json.dumps(metrics, sort_keys=True))
        metrics["run_id"] = run.run_id  # type: ignore[assignment]
        return metrics


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def main(cfg: DictConfig) -> None:
    from labrun.cli import run_task

    run_task(train, cfg)
