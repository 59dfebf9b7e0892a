"""`labrun new`, then a user's whole day in their own repository, as real processes: train,
rerun from elsewhere, edit the model, rerun again, rerun at the recorded commit, and the
project's own `make test`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from labrun.errors import ConfigError
from labrun.scaffold.new import check_name, new
from tests.helpers import GIT_IDENTITY, edit, git, labrun_env, run_labrun


def project_env(tmp_path: Path, project: Path) -> dict[str, str]:
    env = labrun_env(tmp_path, PYTHONPATH=str(project / "src"), **GIT_IDENTITY)
    env["LABRUN_DATA_DIR"] = str(project / "data")  # the project's own CSV
    env.pop("LABRUN_RUN_DIR")  # the project's own runs/ and store
    return env


def the_run(store: str) -> object:
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("example").experiment_id])
    return run


def test_a_new_project_trains_reruns_and_names_what_changed(tmp_path: Path) -> None:
    made = run_labrun(
        ["new", "mylab", "--into", str(tmp_path)], labrun_env(tmp_path, **GIT_IDENTITY)
    )
    assert made.returncode == 0, made.stderr
    project = tmp_path / "mylab"
    commit = git(project, "rev-parse", "HEAD")
    env, store = project_env(tmp_path, project), f"sqlite:///{project}/runs/mlflow.db"

    trained = run_labrun(["train", "experiment=example"], env, cwd=project)
    assert trained.returncode == 0, trained.stderr[-3000:]
    run = the_run(store)
    tags = run.data.tags
    assert tags["labrun.code.mylab"] == commit[:12]  # the user's code, at its commit
    assert tags["labrun.git_commit"] == commit and tags["labrun.git_dirty"] == "False"
    assert tags["labrun.config_dirs"] == "conf"
    assert tags["labrun.code.labrun"]
    assert run.data.metrics["test/acc"] > 0.7  # the example is learnable
    prov = json.loads(
        Path(
            MlflowClient(store).download_artifacts(
                run.info.run_id, "provenance/provenance.json", str(tmp_path)
            )
        ).read_text()
    )
    assert set(prov["code"]["mylab"]["files"]) == {"__init__.py", "data.py", "model.py"}

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    rerun = ["rerun", "--tracking-uri", store, run.info.run_id]  # options before the id
    again = run_labrun(rerun, env, cwd=elsewhere)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "REPRODUCED" in again.stdout

    edit(project / "src/mylab/model.py", "nn.ReLU(),", "nn.GELU(),")
    drifted = run_labrun(rerun, env, cwd=elsewhere)
    assert drifted.returncode == 3, drifted.stderr[-2000:]
    report = " ".join(drifted.stdout.split())
    assert "mylab files" in report and "model.py" in report
    assert "src/mylab/model.py" in report  # the project's uncommitted diff, by file

    git(project, "commit", "-q", "-am", "GELU")
    at_commit = run_labrun([*rerun, "--at-commit"], env, cwd=elsewhere)
    assert at_commit.returncode == 0, at_commit.stdout[-2000:] + at_commit.stderr[-2000:]
    assert "REPRODUCED" in at_commit.stdout  # the original commit, restored in a worktree

    own_tests = subprocess.run(
        ["make", "test", f"PYTHON={sys.executable}"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert own_tests.returncode == 0, own_tests.stdout[-3000:] + own_tests.stderr[-3000:]
    assert "1 passed" in own_tests.stdout


def test_new_refuses_a_bad_name_and_an_existing_folder(tmp_path: Path) -> None:
    for name in ("My-Lab", "1lab", "class", ""):
        with pytest.raises(ConfigError, match="cannot name a Python package"):
            check_name(name)
    (tmp_path / "taken").mkdir()
    with pytest.raises(ConfigError, match="already exists"):
        new("taken", tmp_path)
