"""What a `_target_` may name, and each `_target_` node checked against the signature of the
class it builds: unknown keys and wrong types fail before anything is built, naming the key.

A config read back from a tracking store is untrusted: `_target_` names code that runs, so it
must lie inside the allowlist, and nothing it names is imported before that check.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import types
import typing
from collections import abc
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from labrun.config import rules
from labrun.errors import ConfigError

_META_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


# `_target_` names a callable that instantiate() will run: only these packages may be named.
# A config read back from a tracking store is untrusted; `allowed_targets` adds packages.
ALLOWED_TARGETS = ("labrun", "torch", "torchvision", "torchmetrics", "lightning")
# Inside those packages, callables that load pickles, fetch code or compile it.
DENIED_TARGETS = (
    "torch.hub",
    "torch.load",
    "torch.jit.load",
    "torch.package",
    "torch.utils.cpp_extension",
    "torch.serialization",
    "lightning.pytorch.cli",
    "lightning.fabric.cli",
    "labrun.cli",
)


def _within(target: str, prefixes: tuple[str, ...] | list[str]) -> bool:
    return any(target == p or target.startswith(p.rstrip(".") + ".") for p in prefixes)


def check_allowed(target: str, where: str, allowed: tuple[str, ...] | list[str] = ()) -> None:
    """Refuse a `_target_` outside the allowlist, before anything is imported."""
    if not isinstance(target, str) or not target:
        raise ConfigError(f"'{where}._target_' must be a dotted name, got {target!r}")
    from labrun.config.search_path import trusted_targets

    extra = [a for a in (*allowed, *trusted_targets()) if a]
    if _within(target, DENIED_TARGETS) and not _within(target, [a for a in extra if "." in a]):
        raise ConfigError(
            f"'{where}._target_: {target}' is refused: it can load or run arbitrary code"
        )
    if not _within(target, (*ALLOWED_TARGETS, *extra)):
        raise ConfigError(
            f"'{where}._target_: {target}' is outside the allowed packages "
            f"({', '.join((*ALLOWED_TARGETS, *extra))}); if you trust it, add its package to "
            "allowed_targets (e.g. allowed_targets=[mypkg], or [tool.labrun] allowed_targets "
            "in your project's pyproject.toml)"
        )


def check_targets(
    cfg: DictConfig, prefix: str = "", allowed: tuple[str, ...] | list[str] | None = None
) -> None:
    """Check every `_target_` node below `cfg`: allowed, importable, known keys, right types.

    `allowed` adds packages to the allowlist; by default the config's own `allowed_targets`.
    """
    if allowed is None:
        allowed = list(cfg.get("allowed_targets") or []) if isinstance(cfg, DictConfig) else []
    if isinstance(cfg, DictConfig) and not prefix:
        for key, marker in rules.ROOT.items():
            value = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
            if value is not None and (broken := rules.violates(value, marker)):
                raise ConfigError(
                    f"'{key}' must be {broken}, got {value!r}; fix the value in the "
                    "config or on the command line"
                )
        check_monitored(cfg)
        check_averaging(cfg)
    if isinstance(cfg, DictConfig):
        if "_target_" in cfg:
            _check_node(cfg, prefix, allowed)
        for key in cfg:
            child = _get(cfg, key)
            if isinstance(child, (DictConfig, ListConfig)):
                check_targets(child, f"{prefix}{key}.", allowed)
    elif isinstance(cfg, ListConfig):
        for i, child in enumerate(cfg):
            if isinstance(child, (DictConfig, ListConfig)):
                check_targets(child, f"{prefix}{i}.", allowed)


def check_monitored(cfg: DictConfig) -> None:
    """Every metric something watches (the objective, each callback's `monitor`, a plateau
    scheduler's `model.monitor`) is one the model says it logs in validation (its class's
    `validation_metrics`). A model that does not say is checked at its sanity check."""
    model = cfg.get("model")
    if cfg.get("task_name", "train") != "train":  # an evaluation watches nothing
        return
    if not isinstance(model, DictConfig) or not isinstance(model.get("_target_"), str):
        return
    logs = getattr(_import(model._target_, "model"), "validation_metrics", None)
    if logs is None:
        return
    watched = [("objective.metric", OmegaConf.select(cfg, "objective.metric", default=None))]
    for name, node in (cfg.get("callbacks") or {}).items():
        if isinstance(node, DictConfig) and "monitor" in node:
            watched.append((f"callbacks.{name}.monitor", node.monitor))
    if "Plateau" in str(OmegaConf.select(model, "scheduler._target_", default="")):
        watched.append(("model.monitor", model.get("monitor")))
    for key, metric in watched:
        if metric is not None and metric not in logs:
            raise ConfigError(
                f"'{key}' is '{metric}', a metric {model._target_} never logs (it logs "
                f"{', '.join(logs)} in validation); set {key} to one of those"
            )


def check_averaging(cfg: DictConfig) -> None:
    """Lightning's weight-averaging callbacks validate the average, but a test of the best
    checkpoint after the fit gets the raw weights back (their `on_load_checkpoint` restores
    them), and the exported model with it: a run that tests would report the wrong weights.
    `model.ema_decay` keeps its average as a second module, which FSDP would flatten and shard
    apart from the net's: each rank would hold different pieces of the two."""
    if cfg.get("task_name", "train") != "train":
        return
    strategy = OmegaConf.select(cfg, "trainer.strategy", default=None)
    if OmegaConf.select(cfg, "model.ema_decay", default=None) is not None and str(
        strategy
    ).startswith("fsdp"):
        raise ConfigError(
            "model.ema_decay cannot be used with strategy=fsdp (trainer=fsdp): the average and "
            "the net would be sharded apart; use trainer=ddp, or model.ema_decay=null"
        )
    if not cfg.get("test", False):
        return
    for name, node in (cfg.get("callbacks") or {}).items():
        target = node.get("_target_") if isinstance(node, DictConfig) else None
        if not isinstance(target, str) or not target.startswith("lightning."):
            continue
        from lightning.pytorch.callbacks import WeightAveraging

        found = _import(target, f"callbacks.{name}")
        if isinstance(found, type) and issubclass(found, WeightAveraging):
            raise ConfigError(
                f"'callbacks.{name}' ({target.rsplit('.', 1)[-1]}) validates the averaged "
                "weights but labrun's test and exported model would get the raw ones; use "
                "model.ema_decay (e.g. 0.99) instead, or test=false"
            )


def check_untrusted(cfg: DictConfig, allowed: tuple[str, ...] | list[str], source: str) -> None:
    """Check a config read from `source` (a tracking store) before anything is built from it.

    Every `_target_` must be inside the allowlist; nothing is imported here. The stored
    `allowed_targets` is ignored (the stored text could allow anything): `allowed` comes from
    the user. Stored configs are resolved, so an interpolation in one (`${oc.env:AWS_SECRET}`)
    is refused rather than evaluated. Keys and types are checked later, by `check_targets`.
    """
    for key, value in _leaves(OmegaConf.to_container(cfg, resolve=False)):
        if isinstance(value, str) and "${" in value:
            raise ConfigError(
                f"the config stored in {source} has an interpolation at '{key}' ({value!r}); "
                "stored configs are resolved, so this one was edited: refusing to evaluate it"
            )
        if key == "_target_" or key.endswith("._target_"):
            check_allowed(value, key.removesuffix("._target_").removesuffix("_target_"), allowed)


def _leaves(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(tree, dict):
        return [kv for k, v in tree.items() for kv in _leaves(v, f"{prefix}{k}.")]
    if isinstance(tree, list):
        return [kv for i, v in enumerate(tree) for kv in _leaves(v, f"{prefix}{i}.")]
    return [(prefix.rstrip("."), tree)]


def _get(cfg: DictConfig, key: Any) -> Any:
    """A value, or None when it needs a runtime-only interpolation (such as `${hydra:...}`)."""
    try:
        return cfg[key]
    except InterpolationResolutionError:
        return None


def _check_node(node: DictConfig, prefix: str, allowed: tuple[str, ...] | list[str]) -> None:
    target = node["_target_"]
    where = prefix.rstrip(".") or "<root>"
    check_allowed(target, where, allowed)
    obj = _import(target, where)
    params, accepts_any = _parameters(obj)
    for key in node:
        if key in _META_KEYS:
            continue
        if key not in params:
            if accepts_any:
                continue
            hint = difflib.get_close_matches(str(key), list(params), n=1)
            fix = (
                f"did you mean '{prefix}{hint[0]}'?" if hint else f"valid keys: {', '.join(params)}"
            )
            raise ConfigError(f"unknown key '{prefix}{key}' for {target}; {fix}")
        annotation = params[key]
        value = _get(node, key)
        if value is None and OmegaConf.is_interpolation(node, key):
            continue
        if isinstance(value, (DictConfig, ListConfig)):
            value = OmegaConf.to_container(value, resolve=False)
        if not _matches(value, annotation):
            raise ConfigError(
                f"'{prefix}{key}' must be {_type_name(annotation)}, got {value!r} "
                f"({type(value).__name__}); fix the value in the config or on the command line"
            )
        for marker in _markers(annotation, str(key), target):
            if broken := rules.violates(value, marker):
                raise ConfigError(
                    f"'{prefix}{key}' must be {broken}, got {value!r}; fix the value in the "
                    "config or on the command line"
                )
    _check_together(node, obj, prefix, target)


def _markers(annotation: Any, key: str, target: str) -> list[Any]:
    """The value rules on one parameter: its `Annotated` markers (labrun's classes), else the
    by-name table for third-party classes (`labrun.config.rules.BY_PARAMETER`)."""
    found = []
    stack = [annotation]
    while stack:
        hint = stack.pop()
        if typing.get_origin(hint) is typing.Annotated:
            found += list(hint.__metadata__)
        elif typing.get_origin(hint) in (typing.Union, types.UnionType):
            stack += typing.get_args(hint)
    if not found and not target.startswith("labrun.") and key in rules.BY_PARAMETER:
        found.append(rules.BY_PARAMETER[key])
    return found


def _check_together(node: DictConfig, obj: Any, prefix: str, target: str) -> None:
    """A class's `config_rules` (and the table's for third-party targets) over its keys, with
    the signature's defaults for keys the node leaves out."""
    together = list(getattr(obj, "config_rules", ()) or ()) + rules.TOGETHER.get(target, [])
    if not together:
        return
    func = obj.__init__ if inspect.isclass(obj) else obj
    defaults = {
        n: p.default
        for n, p in inspect.signature(func).parameters.items()
        if p.default is not p.empty
    }
    for rule in together:
        values = {}
        for k in rule.keys:
            value = _get(node, k) if k in node else defaults.get(k)
            if isinstance(value, (DictConfig, ListConfig)):
                value = OmegaConf.to_container(value, resolve=True)
            values[k] = value
        if not rule.holds(**values):
            given = ", ".join(f"{prefix}{k}={v!r}" for k, v in values.items())
            raise ConfigError(
                f"'{prefix.rstrip('.')}' needs {rule.rule}; got {given}; fix one of them"
            )


def _import(target: str, where: str) -> Any:
    module_name, _, attr = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"'{where}._target_': cannot import '{target}' ({exc})") from None


def parameter_default(target: str, name: str) -> tuple[bool, Any]:
    """(True, the default) where `target` takes `name` with a default, else (False, None).
    Call only with a target that passed `check_allowed`: it is imported."""
    try:
        obj = _import(target, "")
        func = obj.__init__ if inspect.isclass(obj) else obj
        param = inspect.signature(func).parameters.get(name)
    except (ConfigError, TypeError, ValueError):
        return False, None
    if param is None or param.default is inspect.Parameter.empty:
        return False, None
    return True, param.default


def _parameters(obj: Any) -> tuple[dict[str, Any], bool]:
    """Constructor parameters with their resolved annotations, and whether **kwargs is taken."""
    func = obj.__init__ if inspect.isclass(obj) else obj
    signature = inspect.signature(func)
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:  # annotations naming TYPE_CHECKING-only types: check keys, not types
        hints = {}
    params: dict[str, Any] = {}
    accepts_any = False
    for name, p in signature.parameters.items():
        if name == "self" or p.kind is p.VAR_POSITIONAL:
            continue
        if p.kind is p.VAR_KEYWORD:
            accepts_any = True
            continue
        params[name] = hints.get(name, Any)
    return params, accepts_any


def _matches(value: Any, annotation: Any) -> bool:
    if typing.get_origin(annotation) is typing.Annotated:
        return _matches(value, typing.get_args(annotation)[0])
    if annotation is Any or annotation is inspect.Parameter.empty:
        return True
    if isinstance(value, dict) and "_target_" in value:
        return True  # built by instantiate; checked as a node of its own
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation in (os.PathLike,) or origin is os.PathLike:
        return isinstance(value, str)
    container = origin or annotation
    if container is list and len(args) == 1:  # list[X]: every item an X
        return isinstance(value, (list, tuple)) and all(_matches(v, args[0]) for v in value)
    if container in (list, tuple, abc.Sequence):
        return isinstance(value, (list, tuple))
    if container in (dict, abc.Mapping):
        return isinstance(value, dict)
    return True  # a class or construct with no config form: leave it to the constructor


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in typing.get_args(annotation) if a is not type(None)]
        nullable = type(None) in typing.get_args(annotation)
        return " or ".join(names) + (" or null" if nullable else "")
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    name = getattr(annotation, "__name__", None)
    return name if name and typing.get_origin(annotation) is None else str(annotation)
