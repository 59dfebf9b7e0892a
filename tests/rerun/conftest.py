"""What the rerun tests share: a shell's folders for commands run in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import DATA_DIR


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What a user's shell would hold: data and run folders for commands run in-process."""
    monkeypatch.setenv("LABRUN_DATA_DIR", str(DATA_DIR))
    monkeypatch.setenv("LABRUN_RUN_DIR", str(tmp_path / "here"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "here"
