"""The model and data contract (labrun.contracts) checked before training: each missing piece
is one line naming it, instead of a traceback after the first epoch or a run that quietly
lacks its model and plots."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import lightning as L
from omegaconf import DictConfig

from labrun.contracts import Exports, HasTestResults
from labrun.errors import ConfigError

log = logging.getLogger(__name__)


def check_model_kwargs(node: DictConfig, given: dict[str, Any]) -> None:
    """The model's constructor takes what the data gives and gets every argument it requires
    (from its config or from `model_kwargs()`)."""
    from hydra.utils import get_class

    target = get_class(node._target_)
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):  # a builtin without a readable signature
        return
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    from_config = {k for k in node if not str(k).startswith("_")}
    unknown = sorted(set(given) - set(params))
    if unknown:
        raise ConfigError(
            f"'{node._target_}' takes no {', '.join(unknown)}, which data.model_kwargs() "
            f"gives; add the parameter (or **kwargs) to its constructor"
        )
    needed = sorted(
        name
        for name, p in params.items()
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and name not in from_config | set(given)
        and name != "self"
    )
    if needed:
        raise ConfigError(
            f"'{node._target_}' needs {', '.join(needed)}, which neither the model config nor "
            f"data.model_kwargs() ({', '.join(sorted(given)) or 'nothing'}) gives; add "
            f"model.{needed[0]}=VALUE or return it from the datamodule's model_kwargs()"
        )


def monitored(cfg: DictConfig, callbacks: list[Any]) -> dict[str, list[str]]:
    """Every metric name something watches: callbacks' `monitor`, the objective, the model's
    plateau scheduler; each with who watches it."""
    watched: dict[str, list[str]] = {}
    for cb in callbacks:
        if key := getattr(cb, "monitor", None):
            watched.setdefault(str(key), []).append(type(cb).__name__)
    if objective := cfg.get("objective"):
        watched.setdefault(str(objective.metric), []).append("objective.metric")
    scheduler = cfg.model.get("scheduler")
    if scheduler and "Plateau" in str(scheduler.get("_target_", "")) and cfg.model.get("monitor"):
        watched.setdefault(str(cfg.model.monitor), []).append("the model's plateau scheduler")
    return watched


def missing_metrics(logged: set[str], watched: dict[str, list[str]]) -> str | None:
    """The one line for metrics watched but not logged, or None."""
    absent = {k: who for k, who in watched.items() if k not in logged}
    if not absent:
        return None
    key, who = next(iter(absent.items()))
    verb = "watches" if len(who) == 1 else "watch"
    seen = ", ".join(sorted(logged)) or "nothing"
    return (
        f"the model logs no '{key}', which {', '.join(who)} {verb} (it logs {seen} "
        f"in validation); log '{key}' with self.log, or set objective.metric to one it logs"
    )


class MonitoredMetrics(L.Callback):
    """After the first validation (the sanity check, before any training step, where it is on)
    every watched metric must have been logged."""

    def __init__(self, watched: dict[str, list[str]]) -> None:
        self.watched = watched
        self.done = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.done or trainer.limit_val_batches == 0:
            return
        self.done = True
        line = missing_metrics(set(trainer.callback_metrics), self.watched)
        if line:
            raise ConfigError(line)


def optional_hooks(model: Any) -> list[str]:
    """What a run of this model will lack, in one line each (logged, not an error)."""
    notes = []
    if not isinstance(model, Exports):
        notes.append(
            f"{type(model).__qualname__} has no export(datamodule): the run stores no "
            "loadable model/ (labrun.contracts.Exports)"
        )
    if not isinstance(model, HasTestResults):
        notes.append(
            f"{type(model).__qualname__} leaves no test_results: the run has no confusion "
            "matrix or ROC plots (labrun.contracts.TestResults)"
        )
    return notes
