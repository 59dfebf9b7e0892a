"""Resume after SIGKILL, stale runs and damaged checkpoints, on real runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from labrun.job.train import train
from labrun.rerun import explain
from labrun.resume.stale import stale_reason
from labrun.tracking.trajectory import ARTIFACT
from tests.helpers import TINY, labrun_env, run_labrun

QUICK = [*TINY, "tracking.log_model=false"]


def trained(make_cfg, *overrides: str) -> tuple[str, dict]:
    metrics = train(make_cfg(*QUICK, *overrides))
    return str(metrics["run_id"]), metrics


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
    "model.ema_decay=0.9",  # the average must resume too (it lost an update per resume once)
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
    fingerprints = [  # the resumed run's trajectory is the whole run's, step for step
        json.loads(Path(client.download_artifacts(r, ARTIFACT, str(tmp_path / r))).read_text())
        for r in (done.info.run_id, run.info.run_id)
    ]
    assert fingerprints[0]["steps"] == 90
    assert explain.first_divergence(*fingerprints) is None


def test_resume_refuses_finished_and_live_runs(make_cfg, store: str, tmp_path: Path) -> None:
    run_id, _ = trained(make_cfg)
    env = labrun_env(tmp_path, store)
    result = run_labrun(["resume", run_id], env)
    assert result.returncode == 2 and "finished; nothing to resume" in result.stderr
    client = MlflowClient(store)
    client.set_terminated(run_id, "RUNNING")
    client.set_tag(run_id, "labrun.hostname", socket.gethostname())
    client.set_tag(run_id, "labrun.pid", str(os.getpid()))  # this test's process: alive
    from labrun.tracking.heartbeat import process_start

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
    from labrun.resume.checkpoints import checkpoint_step

    cfg = make_cfg(*QUICK)
    train(cfg)
    last = Path(cfg.callbacks.model_checkpoint.dirpath) / "last.ckpt"
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    assert checkpoint_step(last) is not None and checkpoint_step(cut) is None
