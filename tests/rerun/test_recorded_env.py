"""`labrun rerun --recorded-env`: the rerun inside the run's recorded packages, built by pip
from the real package index into a real virtualenv."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from labrun.job.train import train
from labrun.rerun import recorded_env
from tests.helpers import TINY, labrun_env, run_labrun


def artifact(client: MlflowClient, run_id: str, path: str, tmp: Path) -> str:
    return Path(client.download_artifacts(run_id, path, str(tmp))).read_text()


def test_a_rerun_inside_the_recorded_packages(
    make_cfg, store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """The run recorded six 1.16.0 where this environment has another six: inside the
    recorded environment the rerun sees 1.16.0 (no package drift) and reproduces; a recorded
    package that no index has is one line naming it, and nothing runs."""
    run_id = str(train(make_cfg(*TINY, "tracking.log_model=false"))["run_id"])
    client = MlflowClient(store)
    freeze = artifact(client, run_id, "provenance/requirements.txt", tmp_path / "a")
    assert re.search(r"(?m)^six==(?!1\.16\.0$)", freeze), "the test needs six at another version"
    client.log_text(
        run_id, re.sub(r"(?m)^six==.*$", "six==1.16.0", freeze), "provenance/requirements.txt"
    )
    cache = tmp_path / "envs"
    env = labrun_env(tmp_path, store, LABRUN_ENV_CACHE=str(cache))

    done = run_labrun(["rerun", run_id, "--recorded-env"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "installing 1 packages at their recorded versions: six==1.16.0" in done.stdout
    (new,) = client.search_runs(
        [client.get_run(run_id).info.experiment_id], f"tags.`labrun.rerun_of` = '{run_id}'"
    )
    assert new.data.tags["labrun.verdict"] == "REPRODUCED"
    (built,) = [p for p in cache.iterdir() if p.is_dir()]
    assert new.data.tags["labrun.recorded_env"] == built.name
    report = json.loads(artifact(client, new.info.run_id, "rerun/drift.json", tmp_path / "b"))
    assert not [i for i in report["items"] if i["kind"] == "packages"]
    assert "six==1.16.0" in artifact(
        client, new.info.run_id, "provenance/requirements.txt", tmp_path / "c"
    )

    monkeypatch.setenv("LABRUN_ENV_CACHE", str(cache))  # the second time: from the cache
    requirements = artifact(client, run_id, "provenance/requirements.txt", tmp_path / "d").split()
    root, key, installed = recorded_env.ensure(requirements)
    assert (root, installed) == (built, ["six==1.16.0"])
    assert f"recorded environment {key}: cached" in capsys.readouterr().out

    client.log_text(run_id, freeze + "retired-package-labrun==0.1\n", "provenance/requirements.txt")
    refused = run_labrun(["rerun", run_id, "--recorded-env"], env)
    assert refused.returncode != 0
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("labrun: error: the recorded package retired-package-labrun==0.1")
    assert "can no longer be installed" in last and "Traceback" not in refused.stderr
    assert len(client.search_runs([client.get_run(run_id).info.experiment_id])) == 2
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 1  # the failed build is gone
