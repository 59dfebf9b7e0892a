"""The check task (`labrun check`): the model and data contract without training."""

from __future__ import annotations

import lightning as L
from omegaconf import DictConfig

from labrun.config.targets import check_targets
from labrun.contracts import DataModule, Prepares, missing
from labrun.errors import ConfigError
from labrun.job import determinism
from labrun.job.build import build
from labrun.job.checks import check_model_kwargs, missing_metrics, monitored, optional_hooks


def check_contract(cfg: DictConfig) -> list[tuple[str, str]]:
    """`labrun check`: the whole contract without training, as (`ok`|`missing`|`note`, line)
    pairs. One validation batch shows what the model logs."""

    check_targets(cfg)
    determinism.apply(cfg.seed, cfg.threads)
    dm = build(cfg.data)
    if lacking := missing(dm, DataModule):
        return [("missing", f"data: {type(dm).__qualname__} lacks {', '.join(lacking)}")]
    dm.prepare_data()
    dm.setup("fit")
    given = dm.model_kwargs()
    found = [("ok", f"data: {type(dm).__qualname__} gives the model {given}")]
    try:
        check_model_kwargs(cfg.model, given)
    except ConfigError as exc:
        return [*found, ("missing", f"model: {exc}")]
    model = build(cfg.model, **given)
    found.append(("ok", f"model: {type(model).__qualname__} takes what the data gives"))
    if isinstance(model, Prepares):
        model.prepare(dm, cfg.paths.run_dir)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.validate(model, datamodule=dm, verbose=False)
    callbacks = [build(c) for c in (cfg.callbacks or {}).values() if c is not None]
    watched = monitored(cfg, callbacks)
    if line := missing_metrics(set(trainer.callback_metrics), watched):
        found.append(("missing", f"metrics: {line}"))
    else:
        found.append(("ok", f"metrics: logs {', '.join(sorted(watched))}, which are watched"))
    return [*found, *(("note", note) for note in optional_hooks(model))]
