"""The stored config made runnable here: moved to this machine's folders, with overrides on
top (`key=value`, `+key=value`, `~key`, config groups), and the run's own overrides composed
with today's configs."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from labrun.config.locations import is_location
from labrun.errors import ConfigError, LabrunError
from labrun.rerun.fetch import Recorded


def task_overrides(recorded: Recorded) -> list[str]:
    """The run's own overrides, without where it ran."""
    return [o for o in recorded.overrides if not is_location(o.split("=", 1)[0])]


def compose_today(recorded: Recorded, extra: list[str]) -> tuple[DictConfig | None, str]:
    """The run's overrides composed with today's configs (None and the error if they fail)."""
    from labrun.config.compose import compose_task

    try:
        cfg = compose_task([*task_overrides(recorded), *extra], "rerun-compose", recorded.task)
    except LabrunError as exc:
        return None, str(exc)
    return cfg, ""


def relocate(cfg: DictConfig, paths: DictConfig, output_dir: str, uri: str) -> DictConfig:
    """The stored config with the recorded machine's folders replaced by this machine's, and its
    store by `uri` wherever the config repeats it (the MLflow logger's `tracking_uri`)."""
    old = cfg.paths
    old_uri = str(cfg.tracking.uri)
    moves = sorted(
        (
            (str(old[k]), str(v))
            for k, v in {**paths, "output_dir": output_dir}.items()
            if old.get(k)
        ),
        key=lambda kv: len(kv[0]),
        reverse=True,
    )

    def move(value: Any) -> Any:
        if isinstance(value, str):
            if value == old_uri:
                return uri
            for before, after in moves:
                if value == before or value.startswith(before.rstrip("/") + "/"):
                    return after + value[len(before) :]
        return value

    tree = _map_leaves(OmegaConf.to_container(cfg, resolve=False), move)
    moved = OmegaConf.create(tree)
    with open_dict(moved):
        moved.paths = {**OmegaConf.to_container(paths), "output_dir": output_dir}
        moved.tracking.uri = uri
        if "data_dir" in moved.get("data", {}):
            moved.data.data_dir = str(paths.data_dir)
    return moved


def _map_leaves(tree: Any, fn: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _map_leaves(v, fn) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_map_leaves(v, fn) for v in tree]
    return fn(tree)


def apply_overrides(cfg: DictConfig, overrides: list[str], recorded: Recorded) -> DictConfig:
    """Hydra overrides on a stored config: `key=value`, `+key=value`, `~key`, and config
    groups (`model/optimizer=sgd`), whose node comes from composing today's group."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from labrun.config.compose import config_dir

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:
        raise ConfigError(f"cannot parse overrides {overrides}: {exc}") from None
    groups = config_dir()
    for override in parsed:
        key = override.key_or_group
        with open_dict(cfg):
            if (groups / key).is_dir():
                fresh, error = compose_today(recorded, [override.input_line])
                if fresh is None:
                    raise ConfigError(error)
                node = key.replace("/", ".")
                OmegaConf.update(cfg, node, OmegaConf.select(fresh, node), merge=False)
            elif override.is_delete():
                parent, _, leaf = key.rpartition(".")
                container = OmegaConf.select(cfg, parent) if parent else cfg
                if container is None or leaf not in container:
                    raise ConfigError(f"cannot delete '{key}': the stored config has no such key")
                del container[leaf]
            else:
                if not override.is_add() and not _has_key(cfg, key):
                    raise ConfigError(
                        f"unknown config key '{key}' in the stored config; check the "
                        f"spelling, or add a new key with '+{key}=VALUE'"
                    )
                OmegaConf.update(cfg, key, override.value(), merge=False, force_add=True)
    return cfg


def _has_key(cfg: DictConfig, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    container = OmegaConf.select(cfg, parent) if parent else cfg
    return isinstance(container, DictConfig) and leaf in container
