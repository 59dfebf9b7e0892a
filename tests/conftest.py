"""Fixtures: a real SQLite MLflow store in a temp dir, and configs composed into it."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from tests.helpers import compose_cfg


@pytest.fixture(scope="session")
def new_store_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new SQLite store, created by labrun as a first run creates one: MLflow's ~60 schema
    migrations take ~2 s, so each test worker makes one and every test gets a copy."""
    from labrun.store.client import open_sqlite_store

    db = tmp_path_factory.mktemp("new_store") / "mlflow.db"
    open_sqlite_store(f"sqlite:///{db}")
    return db


@pytest.fixture
def store(tmp_path: Path, new_store_file: Path) -> str:
    """A fresh SQLite MLflow store of the test's own. (The tests of creating a store, such as
    tests/store/test_races.py, start from no file instead.)"""
    db = tmp_path / "mlflow.db"
    shutil.copyfile(new_store_file, db)
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        # MLflow wrote the Default experiment's artifact folder beside the cwd that made it
        con.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
            (str(tmp_path / "mlruns" / "0"),),
        )
    return f"sqlite:///{db}"


@pytest.fixture
def make_cfg(tmp_path: Path, store: str) -> Callable[..., DictConfig]:
    def make(*overrides: str, config_name: str = "train") -> DictConfig:
        return compose_cfg([f"tracking.uri={store}", *overrides], tmp_path, config_name)

    return make


# The longest files first (seconds of test time in CI's --durations, 2026-12-01): with
# `--dist loadfile` each file runs on one worker, and a long file handed out last keeps one
# worker busy minutes after the other has finished.
LONGEST_FIRST = [
    "tests/sweep/test_slurm.py",
    "tests/sweep/test_sweep.py",
    "tests/job/test_train.py",
    "tests/job/test_scale.py",
    "tests/models/test_gan.py",
    "tests/store/test_server.py",
    "tests/test_bad_input.py",
    "tests/rerun/test_rerun.py",
    "tests/resume/test_resume.py",
    "tests/rerun/test_verdicts.py",
    "tests/rerun/test_recorded_env.py",
    "tests/scaffold/test_new.py",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: a file's own tests keep their order
