"""Typed schemas: a misspelled key or a wrong type fails at compose time, naming the key.

Two layers. The root of every task config is a structured config (the dataclasses below), so
OmegaConf rejects unknown top-level keys and wrong types while Hydra composes. Every node with a
`_target_` is checked against the signature of the class it builds: a config group mirrors a
class, so the class's constructor *is* the schema and there is no second copy to drift.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import os
import types
import typing
from collections import abc
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional  # noqa: UP035 - OmegaConf needs typing generics

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from labrun.errors import ConfigError


@dataclass
class PathsConfig:
    root_dir: str = MISSING
    data_dir: str = MISSING
    run_dir: str = MISSING
    output_dir: str = MISSING


@dataclass
class TrackingConfig:
    uri: str = MISSING
    artifact_root: Optional[str] = None  # noqa: UP045
    experiment: str = MISSING
    run_name: Optional[str] = None  # noqa: UP045
    tags: Dict[str, str] = field(default_factory=dict)  # noqa: UP006
    log_model: bool = True
    connect_timeout_s: float = 10.0


@dataclass
class TaskConfig:
    """Keys every task shares."""

    task_name: str = MISSING
    seed: int = 42
    threads: int = 1
    paths: PathsConfig = field(default_factory=PathsConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    tags: List[str] = field(default_factory=list)  # noqa: UP006
    allowed_targets: List[str] = field(default_factory=list)  # noqa: UP006
    data: Any = None
    model: Any = None
    trainer: Any = None
    callbacks: Any = None
    logger: Any = None


@dataclass
class ObjectiveConfig:
    metric: str = "val/acc"
    direction: str = "maximize"


@dataclass
class TrainConfig(TaskConfig):
    test: bool = True
    ckpt_path: Optional[str] = None  # noqa: UP045
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    hparams_search: Any = None


@dataclass
class EvalConfig(TaskConfig):
    run_id: Optional[str] = None  # noqa: UP045
    ckpt_path: Optional[str] = None  # noqa: UP045


def register_schemas() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(name="eval_schema", node=EvalConfig)


# --- `_target_` nodes against their class's signature -------------------------------------

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
    extra = [a for a in allowed if a]
    if _within(target, DENIED_TARGETS) and not _within(target, [a for a in extra if "." in a]):
        raise ConfigError(
            f"'{where}._target_: {target}' is refused: it can load or run arbitrary code"
        )
    if not _within(target, (*ALLOWED_TARGETS, *extra)):
        raise ConfigError(
            f"'{where}._target_: {target}' is outside the allowed packages "
            f"({', '.join((*ALLOWED_TARGETS, *extra))}); if you trust it, add its package to "
            "allowed_targets (e.g. allowed_targets=[mypkg])"
        )


def check_targets(
    cfg: DictConfig, prefix: str = "", allowed: tuple[str, ...] | list[str] | None = None
) -> None:
    """Check every `_target_` node below `cfg`: allowed, importable, known keys, right types.

    `allowed` adds packages to the allowlist; by default the config's own `allowed_targets`.
    """
    if allowed is None:
        allowed = list(cfg.get("allowed_targets") or []) if isinstance(cfg, DictConfig) else []
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


def _import(target: str, where: str) -> Any:
    module_name, _, attr = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"'{where}._target_': cannot import '{target}' ({exc})") from None


def _parameters(obj: Any) -> tuple[dict[str, Any], bool]:
    """Constructor parameters with their resolved annotations, and whether **kwargs is taken."""
    func = obj.__init__ if inspect.isclass(obj) else obj
    signature = inspect.signature(func)
    try:
        hints = typing.get_type_hints(func)
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
    if container in (list, tuple, abc.Sequence):
        return isinstance(value, (list, tuple))
    if container in (dict, abc.Mapping):
        return isinstance(value, dict)
    return True  # a class or construct with no config form: leave it to the constructor


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    name = getattr(annotation, "__name__", None)
    return name if name and typing.get_origin(annotation) is None else str(annotation)


# --- Hydra and OmegaConf errors as one line -------------------------------------------------


def explain(exc: BaseException) -> str:
    """Turn a composition error into one line that names the key and the fix."""
    if isinstance(exc, ConfigError):
        return str(exc)
    text = str(exc)
    cause = exc.__cause__ or exc.__context__
    full = text + ("\n" + str(cause) if cause else "")
    key = _field(full, "full_key:")
    if "is not in struct" in full or ("Key '" in full and "not in" in full):
        return (
            f"unknown config key '{key or _quoted(text)}'; check the spelling, or add a new key "
            f"with '+{key or _quoted(text)}=VALUE'"
        )
    if "could not be converted" in full or ("Value '" in full and "of type" in full):
        first = next(
            (
                ln.strip()
                for ln in full.splitlines()
                if "could not be converted" in ln or "Value '" in ln
            ),
            full.splitlines()[0],
        )
        return f"wrong type for '{key}': {first}" if key else first
    if "is not Optional" in full:
        return f"'{key}' cannot be null; give it a value"
    # Anything else (an unknown group option, a parse error) as one line, without Hydra's
    # search-path listing.
    text = full.split("Config search path")[0]
    return " ".join(ln.strip() for ln in text.splitlines() if ln.strip()).removeprefix(
        "In 'train': "
    )


def _field(text: str, marker: str) -> str | None:
    for line in text.splitlines():
        if marker in line:
            return line.split(marker, 1)[1].strip()
    return None


def _quoted(text: str) -> str:
    return text.split("'")[1] if text.count("'") >= 2 else text
