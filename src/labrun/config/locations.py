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


# How a run is recorded (tracking.*: where, how often, what is sampled, what is registered)
# never changes what it computes: not part of a config's hash, nor config drift in a rerun.
RECORD_KEYS = ("tracking.",)


def is_record_key(key: str) -> bool:
    """`key` (dotted, or an override's with `+`/`~`/`++`) says how the run is recorded."""
    return key.lstrip("+~").startswith(RECORD_KEYS)


def is_location(key: str) -> bool:
    """`key` (a dotted config key, or an override's, with any `+`/`~`/`++` prefix)."""
    key = key.lstrip("+~")
    return key.startswith(LOCATION_KEYS) or key.endswith(".dirpath")


CONFIG_HASH_TAG = "labrun.config_hash"  # on every run: what a resumed sweep matches
SEED_GROUP_TAG = "labrun.seed_group"  # on every run: the same config under another seed
CHOICE_TAG = "labrun.choice."  # + a config group (model, data, model/optimizer): its choice
# Keys that follow from the seed (`data.shuffle_seed: ${seed}`) or only name the run.
SEED_KEYS = ("seed", "data.shuffle_seed", "tracking.tags", "allowed_targets")


def seed_group(cfg: DictConfig) -> str:
    """The config hash without the seed: runs that differ in their seed only."""
    return config_hash(cfg, SEED_KEYS)


def config_hash(cfg: DictConfig, without: tuple[str, ...] = ()) -> str:
    """The resolved config without its location and record keys (and the keys `without`, each
    with what lies under it): two trials that train the same thing."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            flat[prefix[:-1]] = node

    plain = OmegaConf.to_container(cfg, resolve=True)
    walk({k: v for k, v in plain.items() if k != "hydra"}, "")
    kept = {
        k: v
        for k, v in flat.items()
        if not is_location(k)
        and not is_record_key(k)
        and not any(k == w or k.startswith(f"{w}.") for w in without)
    }
    return _digest(kept)[:16]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
