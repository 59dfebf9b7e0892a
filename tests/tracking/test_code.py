"""The code that ran, per package: installed ones by version, source folders by the sha256 of
each file and their repository's git state; a later drift check names what changed."""

from __future__ import annotations

from pathlib import Path

import lightning
import pytest

from labrun.rerun.drift import package_code
from labrun.tracking.code import code_state, package_state, target_packages
from tests.helpers import git


def a_package(root: Path, name: str) -> Path:
    pkg = root / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text("HIDDEN = 4\n")
    (pkg / "notes.txt").write_text("not code\n")
    return pkg


def test_targets_name_their_packages_labrun_first() -> None:
    cfg = {
        "model": {"_target_": "mylab.models.GRU", "optimizer": {"_target_": "torch.optim.Adam"}},
        "callbacks": [{"_target_": "lightning.pytorch.callbacks.EarlyStopping"}],
    }
    assert target_packages(cfg) == ["labrun", "lightning", "mylab", "torch"]


def test_an_installed_package_is_its_version() -> None:
    state = package_state("lightning")
    assert state["source"] == "installed" and state["version"] == lightning.__version__
    assert "files" not in state


def test_a_folder_outside_git_is_its_file_hashes(tmp_path, monkeypatch) -> None:
    pkg = a_package(tmp_path, "plainlab")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = package_state("plainlab")
    assert before["source"] == "folder" and set(before["files"]) == {"__init__.py", "models.py"}
    assert "commit" not in before
    (pkg / "models.py").write_text("HIDDEN = 8\n")
    (pkg / "extra.py").write_text("")
    (pkg / "notes.txt").write_text("edited, but not code\n")
    (drift,) = package_code({"plainlab": before}, tmp_path)
    assert drift.what == "plainlab files" and drift.now == "models.py, extra.py (new)"


def test_a_package_in_its_own_repository(tmp_path, monkeypatch) -> None:
    repo = tmp_path / "teamlib"
    a_package(repo / "src", "teamlib")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "first")
    monkeypatch.syspath_prepend(str(repo / "src"))
    before = code_state({"model": {"_target_": "teamlib.models.GRU"}})["teamlib"]
    assert before["commit"] == git(repo, "rev-parse", "HEAD") and before["dirty"] is False
    assert before["package_in_repo"] == "src/teamlib"
    assert package_code({"teamlib": before}, tmp_path / "elsewhere") == []
    (repo / "src/teamlib/models.py").write_text("HIDDEN = 16\n")
    git(repo, "commit", "-qam", "wider")
    kinds = {d.what: d for d in package_code({"teamlib": before}, tmp_path / "elsewhere")}
    assert set(kinds) == {"teamlib git commit", "teamlib files"}
    assert kinds["teamlib files"].now == "models.py"


@pytest.mark.parametrize("gone", ["missinglab"])
def test_a_package_no_longer_importable(gone: str) -> None:
    (drift,) = package_code({gone: {"source": "folder", "path": "/old/place"}}, Path("/"))
    assert (drift.what, drift.recorded, drift.now) == (gone, "/old/place", "not importable")
