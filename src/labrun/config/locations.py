"""Config keys that say where a run ran, not what ran: never a difference between two runs,
never carried from one machine to another by a rerun."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from omegaconf import DictConfig, OmegaConf

LOCATION_KEYS = (
    "paths.",
    "hydra.",
    "tracking.uri",
    "tracking.artifact_root",
    "tracking.run_name",
    "trainer.default_root_dir",
)


def is_location(key: str) -> bool:
    """`key` (a dotted config key, or an override's, with any `+`/`~`/`++` prefix)."""
    key = key.lstrip("+~")
    return key.startswith(LOCATION_KEYS) or key.endswith(".dirpath")


CONFIG_HASH_TAG = "labrun.config_hash"  # on every run: what a resumed sweep matches


def config_hash(cfg: DictConfig) -> str:
    """The resolved config without its location keys: two trials that train the same thing."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    plain = OmegaConf.to_container(cfg, resolve=True)
    walk({k: v for k, v in plain.items() if k != "hydra"}, "")
    return _digest({k: v for k, v in flat.items() if not is_location(k)})[:16]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
