"""labrun from a notebook: train, evaluate, rerun, runs and compare as Python calls, with the
command line's guarantees (one-line errors as exceptions, runs never left RUNNING)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import labrun
from labrun.errors import ConfigError, DataError
from tests.helpers import edit, labrun_env, new_project, run_labrun

FAST = ["experiment=example", "tracking.log_model=false", "trainer.max_epochs=2"]


@pytest.fixture
def notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A notebook kernel started in the user's project."""
    project = new_project(tmp_path, "lab_api")
    monkeypatch.syspath_prepend(str(project / "src"))
    monkeypatch.chdir(project)
    monkeypatch.setenv("LABRUN_DATA_DIR", str(project / "data"))
    monkeypatch.setenv("LABRUN_RUN_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return project


def test_train_rerun_evaluate_runs_and_compare(notebook: Path) -> None:
    first = labrun.train([*FAST, "seed=1"])
    second = labrun.train([*FAST, "seed=2"])
    assert set(first) == {"run_id", "metrics", "tracking_uri", "output_dir"}
    assert 0 <= first["metrics"]["test/acc"] <= 1

    again = labrun.rerun(first["run_id"])
    assert again["verdict"] == "REPRODUCED", again["rows"]
    evaluated = labrun.evaluate([f"run_id={first['run_id']}"])
    assert evaluated["metrics"]["test/acc"] == pytest.approx(first["metrics"]["test/acc"])

    table = labrun.runs(experiment="example")
    ids = {first["run_id"], second["run_id"], again["run_id"], evaluated["run_id"]}
    assert set(table["run_id"]) == ids
    assert {"params.seed", "params.model.hidden_size", "metrics.test/acc"} <= set(table.columns)
    assert set(table.loc[table["run_id"] == evaluated["run_id"], "task"]) == {"eval"}
    table = table[table["task"] == "train"]
    pooled = labrun.compare(
        experiment="example",
        filter="tags.`labrun.task` = 'train'",
        group_by="model.hidden_size",
        metric="test/acc",
    )
    (row,) = pooled.to_dict("records")
    assert row["n"] == 3 and row["metric"] == "test/acc"
    values = table["metrics.test/acc"]
    assert row["mean"] == pytest.approx(values.mean())
    pair = labrun.compare([first["run_id"], second["run_id"]])
    assert list(pair["params.seed"]) == ["1", "2"]  # only what differs, per run
    assert "params.model.hidden_size" not in pair.columns


def test_errors_are_the_clis_lines_as_exceptions(notebook: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        labrun.train(["model.hiden_size=3"])
    cli = run_labrun(["train", "model.hiden_size=3"], labrun_env(tmp_path), cwd=notebook)
    assert cli.stderr.strip() == f"labrun: error: {caught.value}"
    assert not (tmp_path / "runs" / "mlflow.db").exists()  # the preflight: nothing ran

    edit(notebook / "data" / "lab_api" / "example.csv", "x1,x2,x3,x4,label", "x1,x2,x3,x4,class")
    with pytest.raises(DataError, match="needs a header row with a 'label' column"):
        labrun.train(FAST)
    client = MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("example").experiment_id])
    assert run.info.status == "FAILED"  # closed, not left RUNNING


def test_the_functions_keep_import_labrun_light() -> None:
    import subprocess
    import sys

    code = "import sys, labrun; print('lightning' in sys.modules, callable(labrun.compare))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
