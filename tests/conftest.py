"""Shared fixtures: real data under LABRUN_DATA_DIR, a real MLflow store in a temp dir."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from labrun import schema
from labrun.compose import compose_task, project_root, register_resolvers

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("LABRUN_DATA_DIR", project_root(ROOT) / "data")).resolve()
RECIPES = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))
# A few batches of everything: the whole loop in seconds.
TINY = [
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=4",
    "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=2",
    "~callbacks.progress_bar",
]

register_resolvers()
schema.register_schemas()


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A fresh SQLite MLflow store."""
    return f"sqlite:///{tmp_path}/mlflow.db"


def compose_cfg(overrides: list[str], tmp_path: Path, config_name: str = "train") -> DictConfig:
    """Compose as `labrun train` does, with outputs and the store under tmp_path."""
    paths = [f"paths.data_dir={DATA_DIR}", f"paths.run_dir={tmp_path}"]
    return compose_task([*paths, *overrides], f"{tmp_path}/out", config_name)


@pytest.fixture
def make_cfg(tmp_path: Path, store: str) -> Callable[..., DictConfig]:
    def make(*overrides: str, config_name: str = "train") -> DictConfig:
        return compose_cfg([f"tracking.uri={store}", *overrides], tmp_path, config_name)

    return make


def labrun_env(tmp_path: Path, store: str | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(LABRUN_DATA_DIR=str(DATA_DIR), LABRUN_RUN_DIR=str(tmp_path / "runs"))
    env.pop("MLFLOW_TRACKING_URI", None)
    if store:
        env["MLFLOW_TRACKING_URI"] = store
    env.update(extra)
    return env


def run_labrun(
    args: list[str],
    env: dict[str, str],
    cwd: Path = ROOT,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """The real console entry point, in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "labrun", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
