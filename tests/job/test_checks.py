"""The model and data contract, checked before training: each way a user's own code can miss
it gives one line naming the missing piece, and the run is closed FAILED before a step."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import labrun
from labrun.errors import ConfigError
from tests.helpers import GIT_IDENTITY, edit, labrun_env, new_project, run_labrun


@pytest.fixture
def user_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request) -> Path:
    """A scaffolded project of the user's, as the working directory, its package importable
    (a name of its own per test: each edits its code)."""
    name = "lab_" + re.sub(r"\W", "_", request.node.name)[:40].lower()
    project = new_project(tmp_path, name)
    monkeypatch.syspath_prepend(str(project / "src"))
    monkeypatch.chdir(project)
    monkeypatch.setenv("LABRUN_DATA_DIR", str(project / "data"))
    monkeypatch.setenv("LABRUN_RUN_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("LABRUN_CONFIG_PATH", raising=False)
    return project


def package(project: Path) -> Path:
    return project / "src" / project.name


def only_run(tmp_path: Path):
    client = MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("example").experiment_id])
    return run


FAST = ["experiment=example", "tracking.log_model=false", "trainer.max_epochs=2"]


def test_the_scaffold_meets_the_contract(user_project: Path, tmp_path: Path) -> None:
    result = labrun.train(FAST)
    run = only_run(tmp_path)
    assert run.info.status == "FINISHED" and result["run_id"] == run.info.run_id
    client = MlflowClient(result["tracking_uri"])
    names = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert "plots/confusion_matrix.png" in names  # its test_results became a plot


def test_a_metric_nobody_logs_stops_before_training(user_project: Path, tmp_path: Path) -> None:
    edit(package(user_project) / "model.py", 'self.log(f"{split}/acc"', 'self.log(f"{split}_acc"')
    with pytest.raises(ConfigError) as caught:
        labrun.train(FAST)
    assert str(caught.value) == (
        "the model logs no 'val/acc', which ModelCheckpoint, EarlyStopping, objective.metric "
        "watch (it logs val/loss, val_acc in validation); log 'val/acc' with self.log, or set "
        "objective.metric to one it logs"
    )
    run = only_run(tmp_path)
    assert run.info.status == "FAILED"
    assert "train/loss" not in run.data.metrics  # the sanity check ran; no training step did


def test_the_objective_sets_what_the_callbacks_watch(user_project: Path, tmp_path: Path) -> None:
    """Logging `val_acc` is fine once the objective says so: the callbacks follow it."""
    edit(package(user_project) / "model.py", 'self.log(f"{split}/acc"', 'self.log(f"{split}_acc"')
    result = labrun.train([*FAST, "objective.metric=val_acc"])
    assert result["metrics"]["test_acc"] > 0


def test_data_that_lacks_what_the_model_needs(user_project: Path) -> None:
    edit(
        package(user_project) / "model.py",
        "num_features: int,",
        "num_features: int,\n        vocab_size: int,",
    )
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "needs vocab_size, which neither the model config nor data.model_kwargs() "
            "(num_classes, num_features) gives"
        ),
    ):
        labrun.train(FAST)


def test_data_that_gives_what_the_model_does_not_take(user_project: Path) -> None:
    edit(
        package(user_project) / "data.py",
        '"num_classes": len(self.class_names)}',
        '"num_classes": len(self.class_names), "vocab_size": 9}',
    )
    with pytest.raises(
        ConfigError, match=re.escape("takes no vocab_size, which data.model_kwargs() gives")
    ):
        labrun.train(FAST)


def test_a_datamodule_without_its_contract_members(user_project: Path) -> None:
    edit(package(user_project) / "data.py", "    def model_kwargs(self)", "    def kwargs(self)")
    with pytest.raises(
        ConfigError,
        match=r"builds CsvData, which lacks model_kwargs of labrun's DataModule contract",
    ):
        labrun.train(FAST)


def test_labrun_check_names_each_piece_without_training(user_project: Path, tmp_path: Path) -> None:
    env = labrun_env(tmp_path, PYTHONPATH=str(user_project / "src"), **GIT_IDENTITY)
    env["LABRUN_DATA_DIR"] = str(user_project / "data")
    good = run_labrun(["check", "experiment=example"], env, cwd=user_project)
    assert good.returncode == 0, good.stderr[-2000:]
    assert re.search(r"ok metrics: logs val/acc, which are watched", good.stdout)
    edit(package(user_project) / "model.py", "    def export(", "    def _export(")
    edit(package(user_project) / "model.py", 'self.log(f"{split}/acc"', 'self.log(f"{split}_acc"')
    bad = run_labrun(["check", "experiment=example"], env, cwd=user_project)
    assert bad.returncode == 1
    lines = " ".join(bad.stdout.split())
    assert "missing metrics: the model logs no 'val/acc'" in lines
    assert "note MLP has no export(datamodule): the run stores no loadable model/" in lines
    assert not (tmp_path / "runs" / "mlflow.db").exists()  # nothing was recorded
