"""A search space (`hparams_search.params`): checked whole before the first trial, drawn per trial.

A misspelled key, a range the config's rules refuse (dropout up to 1.5) or a distribution
Optuna cannot draw from fails here in one line, not as n_trials failed trials.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, OmegaConf

from labrun.config.compose import preflight
from labrun.errors import ConfigError
from labrun.sweep.pareto import check_objectives

KINDS = ("categorical", "float", "int")
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "none")
_ABSENT = object()


def suggest(trial: Any, params: DictConfig) -> list[str]:
    """Hydra overrides for one trial, drawn from the `hparams_search.params` space."""
    overrides = []
    for key, spec in params.items():
        kind = spec.get("type")
        if kind == "categorical":
            value = trial.suggest_categorical(key, list(spec.choices))
        elif kind == "float":
            value = trial.suggest_float(key, spec.low, spec.high, log=spec.get("log", False))
        else:
            value = trial.suggest_int(key, spec.low, spec.high, log=spec.get("log", False))
        overrides.append(f"{key}={value}")
    return overrides


def check_search(base: DictConfig, overrides: list[str], workers: int = 1) -> int:
    """The whole search checked: its settings, every key of its space, and each value the
    space can reach (every choice, both ends of a range) through the config's own rules.
    Returns how many configs were checked."""
    hs = base.hparams_search
    n_trials = hs.get("n_trials")
    if not isinstance(n_trials, int) or isinstance(n_trials, bool) or n_trials < 1:
        raise ConfigError(f"'hparams_search.n_trials' must be an int >= 1, got {n_trials!r}")
    timeout = hs.get("timeout")
    if timeout is not None and (
        not isinstance(timeout, int | float) or isinstance(timeout, bool) or not timeout > 0
    ):
        raise ConfigError(
            f"'hparams_search.timeout' must be seconds > 0 (or null: no limit), got {timeout!r}"
        )
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if hs.sampler.type not in SAMPLERS:
        raise ConfigError(
            f"'hparams_search.sampler.type' must be one of {', '.join(SAMPLERS)}, got "
            f"{hs.sampler.type!r}"
        )
    if hs.pruner.type not in PRUNERS:
        raise ConfigError(
            f"'hparams_search.pruner.type' must be one of {', '.join(PRUNERS)}, got "
            f"{hs.pruner.type!r}"
        )
    check_objectives(hs)
    params = hs.get("params")
    if not isinstance(params, DictConfig) or not params:
        raise ConfigError(
            "'hparams_search.params' must map config keys to distributions, e.g. "
            "model.dropout: {type: float, low: 0.1, high: 0.5}"
        )
    checked = 0
    for key, spec in params.items():
        for value in reachable_values(base, str(key), spec):
            try:
                preflight("train", [*overrides, f"{key}={value}"])
            except ConfigError as exc:
                raise ConfigError(f"{exc} (in the search space: {key}={value})") from None
            checked += 1
    return checked


def reachable_values(base: DictConfig, key: str, spec: Any) -> list[Any]:
    """The values of `key` worth checking: every choice, or both ends of a range."""
    where = f"hparams_search.params['{key}']"
    if OmegaConf.select(base, key, default=_ABSENT) is _ABSENT:
        raise ConfigError(
            f"{where}: '{key}' is not a key of this config; check the spelling "
            "(labrun train --cfg job shows the keys)"
        )
    if not isinstance(spec, DictConfig) or spec.get("type") not in KINDS:
        kind = spec.get("type") if isinstance(spec, DictConfig) else spec
        raise ConfigError(f"{where}.type must be one of {', '.join(KINDS)}, got {kind!r}")
    if spec.type == "categorical":
        choices = spec.get("choices")
        if not choices or isinstance(choices, str | int | float):
            raise ConfigError(f"{where}.choices must be a non-empty list, got {choices!r}")
        return list(choices)
    low, high = spec.get("low"), spec.get("high")
    number = int if spec.type == "int" else (int, float)
    for name, bound in (("low", low), ("high", high)):
        if not isinstance(bound, number) or isinstance(bound, bool) or not math.isfinite(bound):
            raise ConfigError(f"{where}.{name} must be a finite {spec.type}, got {bound!r}")
    if not low < high if spec.type == "float" else not low <= high:
        raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
    if spec.get("log", False) and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {low}")
    return [low, high]
