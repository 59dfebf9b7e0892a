"""A config as MLflow params: flattened to dotted keys, cut to MLflow's limit, secrets out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from labrun.tracking.secrets import REDACTED, environment_secrets, is_secret_key, scrub_text

MAX_PARAM_LENGTH = 6000  # MLflow's limit; the full config is an artifact anyway


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted keys to string values, in key order, for MLflow params."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_LENGTH]
    return flat


def safe_values(items: Mapping[str, Any]) -> dict[str, str]:
    """Param or tag values as stored: redacted under a secret's key, scrubbed otherwise."""
    secrets = environment_secrets()  # read once: a config has hundreds of params
    return {
        k: REDACTED if is_secret_key(k.split(".")[-1]) else scrub_text(str(v), secrets=secrets)
        for k, v in items.items()
    }
