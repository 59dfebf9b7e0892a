"""Fixtures: a real SQLite MLflow store in a temp dir, and configs composed into it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from tests.helpers import compose_cfg


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A fresh SQLite MLflow store."""
    return f"sqlite:///{tmp_path}/mlflow.db"


@pytest.fixture
def make_cfg(tmp_path: Path, store: str) -> Callable[..., DictConfig]:
    def make(*overrides: str, config_name: str = "train") -> DictConfig:
        return compose_cfg([f"tracking.uri={store}", *overrides], tmp_path, config_name)

    return make
