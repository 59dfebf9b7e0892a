"""Reading a run back from the tracking store: its config, overrides, provenance and files.

A stored config is untrusted input (anyone with write access to a shared store wrote it):
it is checked by `schema.check_untrusted` before anything is built from it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from labrun.errors import TrackingError

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file read


def default_uri() -> str:
    """`$MLFLOW_TRACKING_URI`, else the project's embedded store (what `labrun train` uses)."""
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        return uri
    from labrun.compose import project_root

    run_dir = os.environ.get("LABRUN_RUN_DIR") or str(project_root() / "runs")
    return f"sqlite:///{Path(run_dir).resolve()}/mlflow.db"


def client_for(uri: str | None) -> MlflowClient:
    from labrun.tracking.run import check_reachable

    uri = uri or default_uri()
    check_reachable(uri, 10.0)
    return MlflowClient(tracking_uri=uri)


def get_run(client: MlflowClient, run_id: str) -> Run:
    try:
        return client.get_run(run_id)
    except MlflowException:
        raise TrackingError(
            f"no run '{run_id}' in the tracking store {client.tracking_uri}; check the id "
            "(labrun runs lists them) or --tracking-uri / MLFLOW_TRACKING_URI"
        ) from None


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
    from labrun import schema

    local = download(client, run_id, "config/config.yaml", into)
    if local is None:
        raise TrackingError(
            f"run '{run_id}' has no config/config.yaml artifact; it was not recorded by "
            "labrun train or eval"
        )
    cfg = OmegaConf.load(local)
    assert isinstance(cfg, DictConfig)
    schema.check_untrusted(cfg, list(allowed), f"run {run_id}")
    return cfg
