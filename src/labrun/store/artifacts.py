"""A run's stored files read back: its config, overrides, provenance and checkpoints.

A stored config is untrusted input (anyone with write access to a shared store wrote it):
it is checked by `config.targets.check_untrusted` before anything is built from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from labrun.config.targets import check_untrusted
from labrun.errors import TrackingError


def download(client: MlflowClient, run_id: str, path: str, into: Path) -> Path | None:
    """One artifact of a run as a local file, or None when the run has no such artifact."""
    try:
        return Path(client.download_artifacts(run_id, path, str(into)))
    except (MlflowException, OSError):
        return None


def read_json(client: MlflowClient, run_id: str, path: str, into: Path) -> Any:
    local = download(client, run_id, path, into)
    return json.loads(local.read_text()) if local else None


def read_text(client: MlflowClient, run_id: str, path: str, into: Path) -> str | None:
    local = download(client, run_id, path, into)
    return local.read_text(encoding="utf-8") if local else None


def stored_config(
    client: MlflowClient, run_id: str, into: Path, allowed: list[str] | tuple[str, ...] = ()
) -> DictConfig:
    """The resolved config a run recorded, checked as untrusted input."""
    local = download(client, run_id, "config/config.yaml", into)
    if local is None:
        raise TrackingError(
            f"run '{run_id}' has no config/config.yaml artifact; it was not recorded by "
            "labrun train or eval"
        )
    cfg = OmegaConf.load(local)
    assert isinstance(cfg, DictConfig)
    check_untrusted(cfg, list(allowed), f"run {run_id}")
    return cfg
