"""Reruns, resumes, stale runs and untrusted stored configs, against real runs in a real store."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from labrun.config import targets as schema
from labrun.errors import ConfigError
from labrun.job.train import train
from labrun.rerun import drift
from labrun.rerun import fetch as rerun_fetch
from labrun.rerun import overrides as rerun_overrides
from labrun.rerun import verdict as rerun_verdict
from tests.helpers import DATA_DIR, ROOT, TINY, do_rerun, labrun_env, run_labrun

QUICK = [*TINY, "tracking.log_model=false"]


def trained(make_cfg, *overrides: str) -> tuple[str, dict]:
    metrics = train(make_cfg(*QUICK, *overrides))
    return str(metrics["run_id"]), metrics


def artifact(client: MlflowClient, run_id: str, path: str, tmp: Path) -> str:
    return Path(client.download_artifacts(run_id, path, str(tmp))).read_text()


def recorded_drift(client: MlflowClient, run_id: str, cfg_paths) -> drift.Report:
    recorded = rerun_fetch.fetch(client, run_id, [])
    fresh, error = rerun_overrides.compose_today(recorded, [])
    from omegaconf import OmegaConf

    return drift.check(
        recorded.provenance,
        recorded.git_diff,
        recorded.requirements,
        recorded.fingerprint,
        OmegaConf.to_container(recorded.config),
        OmegaConf.to_container(fresh, resolve=True) if fresh is not None else None,
        error,
        Path(cfg_paths.root_dir),
        Path(cfg_paths.data_dir),
        recorded_numerics=recorded.numerics,
    )


def test_rerun_reproduces_from_the_store_alone(make_cfg, store: str, here: Path, tmp_path) -> None:
    run_id, _ = trained(make_cfg)
    client = MlflowClient(store)
    original_out = Path(client.get_run(run_id).data.params["paths.output_dir"])
    shutil.rmtree(original_out)  # the original folder is gone: only the store is left

    result = do_rerun(store, run_id)

    assert result["verdict"] == "REPRODUCED"
    assert all(row["match"] for row in result["rows"]) and len(result["rows"]) >= 10
    new = client.get_run(result["run_id"])
    assert new.info.status == "FINISHED"
    assert new.data.tags["labrun.rerun_of"] == run_id
    assert new.data.tags["labrun.verdict"] == "REPRODUCED"
    assert new.data.tags["labrun.drift"] == "none"
    assert Path(new.data.params["paths.output_dir"]).is_relative_to(here)
    original = client.get_run(run_id).data.metrics
    for key in ("test/acc", "test/loss", "val/loss"):
        assert new.data.metrics[key] == original[key]  # bit-identical on CPU
    verdict = json.loads(artifact(client, result["run_id"], "rerun/verdict.json", tmp_path))
    assert verdict["verdict"] == "REPRODUCED" and "bit-identical" in verdict["tolerance"]


def test_a_changed_result_is_reported_as_differs() -> None:
    before = {"test/acc": 0.91, "test/loss": 0.30}
    outcome, rows = rerun_verdict.verdict(
        before, {"test/acc": 0.91, "test/loss": 0.3000001}, True, 0, 0
    )
    assert outcome == "DIFFERS" and [r["metric"] for r in rows if not r["match"]] == ["test/loss"]
    assert rerun_verdict.verdict(
        before, {"test/acc": 0.91, "test/loss": 0.3000001}, False, 1e-3, 0
    )[0] == ("REPRODUCED")
    assert (
        rerun_verdict.verdict(before, {"test/acc": 0.91}, False, 1e-3, 0)[0] == "DIFFERS"
    )  # missing


def test_variant_is_linked_and_has_no_verdict(make_cfg, store: str, here: Path) -> None:
    run_id, _ = trained(make_cfg)
    result = do_rerun(store, run_id, "trainer.max_epochs=2", "model/optimizer=sgd")
    new = MlflowClient(store).get_run(result["run_id"])
    assert new.data.tags["labrun.variant_of"] == run_id
    assert "labrun.verdict" not in new.data.tags and "labrun.rerun_of" not in new.data.tags
    assert new.data.params["trainer.max_epochs"] == "2"
    assert new.data.params["model.optimizer._target_"] == "torch.optim.SGD"


def test_unknown_override_key_is_one_clear_error(make_cfg, store: str, here: Path) -> None:
    run_id, _ = trained(make_cfg)
    with pytest.raises(ConfigError, match=re.escape("unknown config key 'trainer.max_epoch'")):
        do_rerun(store, run_id, "trainer.max_epoch=2")


def test_rerun_at_the_recorded_commit(make_cfg, store: str, here: Path) -> None:
    run_id, _ = trained(make_cfg)
    result = do_rerun(store, run_id, "--at-commit")
    client = MlflowClient(store)
    new = client.get_run(result["run_id"])
    assert result["verdict"] == "REPRODUCED"
    commit = client.get_run(run_id).data.tags["labrun.git_commit"]
    assert new.data.tags["labrun.at_commit"] == commit
    assert new.data.tags["labrun.git_commit"] == commit  # the worktree's own provenance
    assert new.data.tags["labrun.rerun_of"] == run_id


def git(repo: Path, *args: str) -> str:
    who = ["-c", "user.name=labrun tests", "-c", "user.email=tests@labrun.invalid"]
    done = subprocess.run(["git", "-C", str(repo), *who, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_rerun_at_an_older_commit_restores_its_recorded_diff(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run made at commit A with an uncommitted edit (dropout 0.2), rerun after the repository
    moved on to commit B (dropout 0.3): --at-commit trains A plus the edit, and reproduces."""
    repo = tmp_path / "repo"
    git(ROOT, "worktree", "prune")
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    for part in ("src", "conf", "experiments", "pyproject.toml"):  # the code under test
        subprocess.run(["rm", "-rf", str(repo / part)], check=True)
        subprocess.run(["cp", "-r", str(ROOT / part), str(repo / part)], check=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", "A")
    commit_a = git(repo, "rev-parse", "HEAD")
    recipe = repo / "experiments" / "trec_lstm.yaml"
    original = recipe.read_text()
    assert "  dropout: 0.5\n" in original
    recipe.write_text(original.replace("  dropout: 0.5\n", "  dropout: 0.2\n"))
    env = labrun_env(tmp_path, store, PYTHONPATH=str(repo / "src"))
    args = ["train", "experiment=trec_lstm", *TINY, "tracking.log_model=false"]
    proc = run_labrun([*args, "tracking.run_name=at-a"], env, cwd=repo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(store)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("trec_lstm").experiment_id], "attributes.run_name = 'at-a'"
    )
    assert run.data.tags["labrun.git_commit"] == commit_a
    assert run.data.tags["labrun.git_dirty"] == "True"
    recipe.write_text(original.replace("  dropout: 0.5\n", "  dropout: 0.3\n"))
    git(repo, "commit", "-q", "-am", "B")
    assert git(repo, "status", "--porcelain") == ""
    monkeypatch.setenv("LABRUN_ROOT", str(repo))
    monkeypatch.setenv("LABRUN_DATA_DIR", str(DATA_DIR))
    monkeypatch.setenv("LABRUN_RUN_DIR", str(tmp_path / "reruns"))
    result = do_rerun(store, run.info.run_id, "--at-commit")
    assert result["verdict"] == "REPRODUCED", result["rows"]
    new = client.get_run(result["run_id"])
    assert new.data.tags["labrun.at_commit"] == commit_a
    assert new.data.tags["labrun.git_commit"] == commit_a  # the worktree's own provenance
    assert new.data.params["model.dropout"] == "0.2"  # A plus the recorded edit, not B


def test_each_kind_of_drift_is_detected(make_cfg, store: str, here: Path, tmp_path) -> None:
    run_id, _ = trained(make_cfg)
    client = MlflowClient(store)
    paths = make_cfg().paths
    assert recorded_drift(client, run_id, paths).items == []

    prov = json.loads(artifact(client, run_id, "provenance/provenance.json", tmp_path / "a"))
    prov["git"]["commit"] = "0" * 40
    prov["device"] = "cuda:NVIDIA H100 x8"
    client.log_dict(run_id, prov, "provenance/provenance.json")
    freeze = artifact(client, run_id, "provenance/requirements.txt", tmp_path / "b")
    freeze = re.sub(r"(?m)^torch==.*$", "torch==2.0.0", freeze)
    client.log_text(run_id, freeze, "provenance/requirements.txt")
    fingerprint = json.loads(
        artifact(client, run_id, "provenance/data_fingerprint.json", tmp_path / "c")
    )
    fingerprint[next(iter(fingerprint))] = "f" * 64
    client.log_dict(run_id, fingerprint, "provenance/data_fingerprint.json")
    config = artifact(client, run_id, "config/config.yaml", tmp_path / "d")
    client.log_text(
        run_id,
        config.replace("  hidden_size:", "  retired_key: 1\n  hidden_size:"),
        "config/config.yaml",
    )

    numerics = json.loads(artifact(client, run_id, "provenance/numerics.json", tmp_path / "e"))
    numerics["cpu_capability"] = "AVX512" if numerics["cpu_capability"] != "AVX512" else "AVX2"
    numerics["env"]["OMP_NUM_THREADS"] = "7"
    numerics["container"] = {"runtime": "docker", "id": "0123456789ab"}
    client.log_dict(run_id, numerics, "provenance/numerics.json")

    report = recorded_drift(client, run_id, paths)
    found = {(d.kind, d.what) for d in report.items}
    affects = {d.what: d.affects for d in report.items if d.kind == "numerics"}
    assert affects["cpu capability"] and affects["env.OMP_NUM_THREADS"]
    assert affects["container.id"] is False  # what is inside it is compared apart
    assert ("code", "git commit") in found
    assert ("hardware", "device") in found
    assert ("packages", "torch") in found
    assert ("data", next(iter(fingerprint))) in found
    assert ("config", "model.retired_key") in found
    assert report.kinds == list(drift.KINDS)
    assert report.as_dict()["seconds"] == round(report.seconds, 3) > 0  # measured, recorded


def test_data_drift_from_a_changed_file(make_cfg, store: str, tmp_path: Path) -> None:
    data = tmp_path / "mydata"
    shutil.copytree(DATA_DIR / "text" / "trec", data / "text" / "trec")
    run_id, _ = trained(make_cfg, f"paths.data_dir={data}")
    client = MlflowClient(store)
    with open(data / "text" / "trec" / "TREC_10.label", "ab") as f:
        f.write(b"DESC:def what is drift ?\n")
    report = recorded_drift(client, run_id, make_cfg(f"paths.data_dir={data}").paths)
    assert [d.kind for d in report.items] == ["data"]


def test_drift_stops_the_rerun_unless_allowed(make_cfg, store: str, tmp_path: Path) -> None:
    """Drift of the experiment (here: its config schema) stops a rerun; drift of the machine
    (a package) does not, and one that cannot change results still expects bit-identity."""
    run_id, _ = trained(make_cfg)
    client = MlflowClient(store)
    freeze = artifact(client, run_id, "provenance/requirements.txt", tmp_path / "a")
    client.log_text(run_id, freeze + "retired-package==0.1\n", "provenance/requirements.txt")
    config = artifact(client, run_id, "config/config.yaml", tmp_path / "c")
    changed = config.replace("  hidden_size:", "  retired_key: 1\n  hidden_size:")
    client.log_text(run_id, changed, "config/config.yaml")
    env = labrun_env(tmp_path, store)
    stopped = run_labrun(["rerun", run_id], env)
    assert stopped.returncode == 3, stopped.stderr
    assert "experiment drifted" in stopped.stderr and "(config)" in stopped.stderr
    assert "--allow-drift" in stopped.stderr
    assert "retired-package" in stopped.stdout and "retired_key" in stopped.stdout
    assert len(client.search_runs([client.get_run(run_id).info.experiment_id])) == 1

    allowed = run_labrun(["rerun", run_id, "--allow-drift"], env)
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    (new,) = client.search_runs(
        [client.get_run(run_id).info.experiment_id], f"tags.`labrun.rerun_of` = '{run_id}'"
    )
    drift = artifact(client, new.info.run_id, "rerun/drift.json", tmp_path / "d")
    assert new.data.tags["labrun.drift"] == "packages,config", drift
    assert new.data.tags["labrun.verdict"] == "REPRODUCED"
    assert new.data.tags["labrun.verdict_rule"].startswith("exact:")  # the package cannot
    assert "REPRODUCED" in allowed.stdout
    report = json.loads(artifact(client, new.info.run_id, "rerun/drift.json", tmp_path / "b"))
    item = next(i for i in report["items"] if i["what"] == "retired-package")
    assert item["affects"] is False


def test_a_key_gained_since_the_run_reports_its_default_and_does_not_stop(
    make_cfg, store: str, tmp_path: Path
) -> None:
    """A run stored before `model.label_smoothing` existed: its config lacks the key, so its
    rerun trains at the constructor's default, as the code did then. Reported, not stopping,
    and the rerun reproduces."""
    run_id, _ = trained(make_cfg, "model.label_smoothing=0.0")  # what the code did before it
    client = MlflowClient(store)
    config = artifact(client, run_id, "config/config.yaml", tmp_path / "a")
    assert "  label_smoothing: 0.0\n" in config
    client.log_text(run_id, config.replace("  label_smoothing: 0.0\n", ""), "config/config.yaml")
    overrides = json.loads(artifact(client, run_id, "config/overrides.json", tmp_path / "b"))
    overrides["overrides"].remove("model.label_smoothing=0.0")
    client.log_dict(run_id, overrides, "config/overrides.json")
    report = recorded_drift(client, run_id, make_cfg().paths)
    (item,) = report.items
    assert (item.kind, item.what, item.recorded, item.now, item.affects) == (
        "config",
        "model.label_smoothing",
        "absent (default 0.0)",
        "present",
        False,
    )
    assert report.stopping == []

    result = run_labrun(["rerun", run_id], labrun_env(tmp_path, store))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "model.label_smoothing" in result.stdout and "REPRODUCED" in result.stdout


def test_stored_config_naming_os_system_is_refused(make_cfg, store: str, tmp_path: Path) -> None:
    run_id, _ = trained(make_cfg)
    client = MlflowClient(store)
    config = artifact(client, run_id, "config/config.yaml", tmp_path / "a")
    evil = config.replace("_target_: labrun.models.TextClassifier", "_target_: os.system", 1)
    assert evil != config
    client.log_text(run_id, evil, "config/config.yaml")
    env = labrun_env(tmp_path, store)
    for argv in (["rerun", run_id], ["eval", f"run_id={run_id}"]):
        result = run_labrun(argv, env)
        assert result.returncode == 2, result.stderr[-2000:]
        (line,) = [ln for ln in result.stderr.splitlines() if ln.startswith("labrun: error")]
        assert "os.system" in line and "outside the allowed packages" in line
    experiment = client.get_run(run_id).info.experiment_id
    assert len(client.search_runs([experiment])) == 1  # nothing ran
    client.log_text(
        run_id,
        config.replace("hidden_size: 256", "hidden_size: ${oc.env:HOME}"),
        "config/config.yaml",
    )
    result = run_labrun(["rerun", run_id], env)
    assert result.returncode == 2 and "interpolation" in result.stderr


def test_allowlist_is_checked_before_import(make_cfg) -> None:
    with pytest.raises(ConfigError, match="outside the allowed packages"):
        schema.check_targets(make_cfg("+callbacks.evil._target_=subprocess.run"))
    with pytest.raises(ConfigError, match="can load or run arbitrary code"):
        schema.check_targets(make_cfg("+callbacks.evil._target_=torch.hub.load"))
    schema.check_allowed("mypkg.Model", "model", ["mypkg"])  # a user's own package, allowed


def test_rerun_asks_for_redacted_secrets(make_cfg, store: str, here: Path) -> None:
    run_id, _ = trained(make_cfg, "+tracking.tags.db_password=hunter2-hunter2")
    with pytest.raises(ConfigError, match=re.escape("tracking.tags.db_password=...")):
        do_rerun(store, run_id)
    result = do_rerun(store, run_id, "tracking.tags.db_password=hunter2-hunter2")
    assert result["verdict"] == "REPRODUCED" and not result["variant"]
