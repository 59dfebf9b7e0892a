"""Reruns, resumes, stale runs and untrusted stored configs, against real runs in a real store."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from labrun import drift, rerun, schema
from labrun.errors import ConfigError
from labrun.tracking.secrets import REDACTED, redact, scrub_text
from labrun.tracking.stale import stale_reason
from labrun.train import train
from tests.conftest import DATA_DIR, TINY, labrun_env, run_labrun

QUICK = [*TINY, "tracking.log_model=false"]


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """What a user's shell would hold: data and run folders for commands run in-process."""
    monkeypatch.setenv("LABRUN_DATA_DIR", str(DATA_DIR))
    monkeypatch.setenv("LABRUN_RUN_DIR", str(tmp_path / "here"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "here"


def trained(make_cfg, *overrides: str) -> tuple[str, dict]:
    metrics = train(make_cfg(*QUICK, *overrides))
    return str(metrics["run_id"]), metrics


def do_rerun(store: str, *argv: str) -> dict:
    return rerun.rerun(rerun.parse([*argv, "--tracking-uri", store]))


def artifact(client: MlflowClient, run_id: str, path: str, tmp: Path) -> str:
    return Path(client.download_artifacts(run_id, path, str(tmp))).read_text()


# -- rerun --------------------------------------------------------------------------------


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
    outcome, rows = rerun.verdict(before, {"test/acc": 0.91, "test/loss": 0.3000001}, True, 0, 0)
    assert outcome == "DIFFERS" and [r["metric"] for r in rows if not r["match"]] == ["test/loss"]
    assert rerun.verdict(before, {"test/acc": 0.91, "test/loss": 0.3000001}, False, 1e-3, 0)[0] == (
        "REPRODUCED"
    )
    assert rerun.verdict(before, {"test/acc": 0.91}, False, 1e-3, 0)[0] == "DIFFERS"  # missing


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


# -- drift ----------------------------------------------------------------------------------


def recorded_drift(client: MlflowClient, run_id: str, cfg_paths) -> drift.Report:
    recorded = rerun.fetch(client, run_id, [])
    fresh, error = rerun.compose_today(recorded, [])
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
    )


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

    report = recorded_drift(client, run_id, paths)
    found = {(d.kind, d.what) for d in report.items}
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
    run_id, _ = trained(make_cfg)
    client = MlflowClient(store)
    freeze = artifact(client, run_id, "provenance/requirements.txt", tmp_path / "a")
    client.log_text(run_id, freeze + "retired-package==0.1\n", "provenance/requirements.txt")
    env = labrun_env(tmp_path, store)
    stopped = run_labrun(["rerun", run_id], env)
    assert stopped.returncode == 3, stopped.stderr
    assert "drifted" in stopped.stderr and "--allow-drift" in stopped.stderr
    assert "retired-package" in stopped.stdout
    assert len(client.search_runs([client.get_run(run_id).info.experiment_id])) == 1

    allowed = run_labrun(["rerun", run_id, "--allow-drift"], env)
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    (new,) = client.search_runs(
        [client.get_run(run_id).info.experiment_id], f"tags.`labrun.rerun_of` = '{run_id}'"
    )
    assert new.data.tags["labrun.drift"] == "packages"
    assert new.data.tags["labrun.verdict"] == "REPRODUCED"
    assert "REPRODUCED" in allowed.stdout
    report = json.loads(artifact(client, new.info.run_id, "rerun/drift.json", tmp_path / "b"))
    assert report["items"][0]["what"] == "retired-package"


# -- untrusted stored configs and secrets ---------------------------------------------------


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


def test_secrets_never_reach_params_tags_or_artifacts(
    make_cfg, store: str, tmp_path: Path, monkeypatch
) -> None:
    secret = "s3cr3t-value-for-labrun-test"
    monkeypatch.setenv("LABRUN_TEST_API_TOKEN", secret)
    run_id, _ = trained(
        make_cfg,
        "+tracking.tags.db_password=hunter2-hunter2",
        "+tracking.tags.note=${oc.env:LABRUN_TEST_API_TOKEN}",
    )
    client = MlflowClient(store)
    run = client.get_run(run_id)
    everything = json.dumps([run.data.params, run.data.tags])
    out = tmp_path / "artifacts"
    client.download_artifacts(run_id, "", str(out))
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in {".yaml", ".json", ".txt", ".diff"}:
            everything += path.read_text(errors="replace")
    assert secret not in everything and "hunter2-hunter2" not in everything
    assert run.data.params["tracking.tags.db_password"] == REDACTED
    assert run.data.params["tracking.tags.note"] == REDACTED
    assert run.data.params["model.hidden_size"] == "256"  # ordinary values untouched


def test_scrubbing_rules() -> None:
    env = {"HF_TOKEN": "hf_abcdefgh", "PWD": "/home/me", "MY_AUTH_HEADER": "x"}
    text = "uri: postgresql://bob:pw123@db/x\npassword: abc\ntokenizer: basic\ngoogle-auth==2.6"
    scrubbed = scrub_text(text + " hf_abcdefgh /home/me", env)
    assert "pw123" not in scrubbed and "abc\n" not in scrubbed and "hf_abcdefgh" not in scrubbed
    assert "tokenizer: basic" in scrubbed and "google-auth==2.6" in scrubbed
    assert "/home/me" in scrubbed  # PWD is a folder, not a password
    assert redact({"db": {"apiKey": "k", "host": "h"}}, env) == {
        "db": {"apiKey": REDACTED, "host": "h"}
    }


def test_rerun_asks_for_redacted_secrets(make_cfg, store: str, here: Path) -> None:
    run_id, _ = trained(make_cfg, "+tracking.tags.db_password=hunter2-hunter2")
    with pytest.raises(ConfigError, match=re.escape("tracking.tags.db_password=...")):
        do_rerun(store, run_id)
    result = do_rerun(store, run_id, "tracking.tags.db_password=hunter2-hunter2")
    assert result["verdict"] == "REPRODUCED" and not result["variant"]


# -- resume -------------------------------------------------------------------------------

RESUMABLE = [
    "trainer.max_epochs=3",
    "+trainer.limit_train_batches=30",
    "+trainer.limit_val_batches=4",
    "+trainer.limit_test_batches=4",
    "trainer.log_every_n_steps=5",
    "callbacks.resume_checkpoint.every_s=null",
    "+callbacks.resume_checkpoint.every_n_train_steps=7",
    "~callbacks.early_stopping",
    "~callbacks.progress_bar",
    "tracking.log_model=false",
]


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_sigkill_then_resume_ends_like_the_uninterrupted_run(tmp_path: Path, store: str) -> None:
    env = labrun_env(tmp_path, store)
    full = run_labrun(["train", *RESUMABLE], env)
    assert full.returncode == 0, full.stderr[-3000:]
    client = MlflowClient(store)
    (done,) = client.search_runs([client.get_experiment_by_name("trec_lstm").experiment_id])

    proc = subprocess.Popen(
        [sys.executable, "-m", "labrun", "train", *RESUMABLE],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    runs_dir = tmp_path / "runs" / "train"
    deadline = time.time() + 240
    first_epoch = None
    while time.time() < deadline and first_epoch is None:
        first_epoch = next(runs_dir.glob("*/checkpoints/epoch_000.ckpt"), None)
        time.sleep(0.02)
    assert first_epoch is not None, "training never reached its first checkpoint"
    resume_ckpt = first_epoch.parent / "resume.ckpt"
    seen = resume_ckpt.stat().st_mtime_ns
    while time.time() < deadline and resume_ckpt.stat().st_mtime_ns == seen:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # mid-epoch, right after (or during) a checkpoint write
    proc.wait(timeout=30)
    experiment = client.get_experiment_by_name("trec_lstm").experiment_id
    (killed,) = client.search_runs([experiment], "attributes.status = 'RUNNING'")
    assert killed.info.status == "RUNNING"

    stale = run_labrun(["runs", "--stale"], env)
    assert stale.returncode == 0 and killed.info.run_id[:10] in stale.stdout, stale.stdout
    marked = client.get_run(killed.info.run_id)
    assert marked.info.status == "FAILED" and marked.data.tags["labrun.stale"] == "1"

    resumed = run_labrun(["resume", killed.info.run_id], env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming at epoch" in resumed.stderr
    run = client.get_run(killed.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["labrun.resumes"] == "1"
    for key in ("test/acc", "test/loss", "val/loss", "val/acc", "train/loss_epoch"):
        assert run.data.metrics[key] == done.data.metrics[key], key  # bit-identical
    for key in ("val/loss", "train/loss_step", "train/loss_epoch", "train/acc", "epoch"):
        steps = [s for s, _ in history(client, run.info.run_id, key)]
        if key != "epoch":  # Lightning logs `epoch` twice at an epoch's last step, always
            assert len(steps) == len(set(steps)), f"duplicate steps in {key}"
        assert history(client, run.info.run_id, key) == history(client, done.info.run_id, key)


def test_resume_refuses_finished_and_live_runs(make_cfg, store: str, tmp_path: Path) -> None:
    run_id, _ = trained(make_cfg)
    env = labrun_env(tmp_path, store)
    result = run_labrun(["resume", run_id], env)
    assert result.returncode == 2 and "finished; nothing to resume" in result.stderr
    client = MlflowClient(store)
    client.set_terminated(run_id, "RUNNING")
    client.set_tag(run_id, "labrun.hostname", socket.gethostname())
    client.set_tag(run_id, "labrun.pid", str(os.getpid()))  # this test's process: alive
    from labrun.tracking.run import process_start

    client.set_tag(run_id, "labrun.pid_start", process_start(os.getpid()) or "")
    result = run_labrun(["resume", run_id], env)
    assert result.returncode == 2 and "is still running" in result.stderr


def test_stale_rules(make_cfg, store: str) -> None:
    run_id, _ = trained(make_cfg)
    client = MlflowClient(store)
    client.set_terminated(run_id, "RUNNING")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    cases = [
        ({"labrun.hostname": socket.gethostname(), "labrun.pid": str(dead.pid)}, True),
        ({"labrun.hostname": "elsewhere", "labrun.heartbeat": str(int(time.time()) - 3600)}, True),
        ({"labrun.hostname": "elsewhere", "labrun.heartbeat": str(int(time.time()))}, False),
    ]
    for tags, is_stale in cases:
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
        if "labrun.pid" not in tags and "labrun.pid" in client.get_run(run_id).data.tags:
            client.delete_tag(run_id, "labrun.pid")
        assert (stale_reason(client.get_run(run_id)) is not None) == is_stale, tags


def test_a_truncated_checkpoint_is_never_resumed_from(make_cfg, tmp_path: Path) -> None:
    from labrun.resume import checkpoint_step

    cfg = make_cfg(*QUICK)
    train(cfg)
    last = Path(cfg.callbacks.model_checkpoint.dirpath) / "last.ckpt"
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    assert checkpoint_step(last) is not None and checkpoint_step(cut) is None
