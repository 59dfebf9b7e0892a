"""Sweeps on a real SLURM: the one-node cluster `make slurm` starts (munge, slurmctld, slurmd on
this machine), jobs submitted through submitit and Hydra's launcher, real DDP ranks that SLURM
starts, a real MLflow store."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import FAST, ROOT, labrun_command, labrun_env, run_labrun

SLURM_DIR = ROOT / "runs" / "slurm"  # the folder make slurm uses: one cluster per machine


@pytest.fixture(scope="session")
def slurm() -> Path:
    """The cluster, started for the tests (left as found: stopped if the tests started it)."""
    from labrun.sweep import cluster

    was_running = cluster.alive(SLURM_DIR / "slurmctld.pid") is not None
    try:
        cluster.start(SLURM_DIR)
    except cluster.ClusterError as exc:
        if os.environ.get("CI"):
            raise  # in CI the SLURM tests must run
        pytest.skip(f"no SLURM cluster here: {exc}")
    yield SLURM_DIR
    if not was_running:
        cluster.stop(SLURM_DIR)


SMALL_JOBS = ["hydra.launcher.mem_gb=6", "hydra.launcher.timeout_min=10"]  # 2 ranks: ~1.2 GB each


def test_a_ddp_sweep_on_slurm_is_labrun_runs(slurm: Path, tmp_path: Path, store: str) -> None:
    """2 jobs of 2 DDP tasks each: SLURM starts both ranks (nothing relaunched), each job is a
    FINISHED child run with its SLURM job, array index, nodes and requeue count as tags and
    SLURM's stdout/stderr of both tasks as artifacts."""
    proc = run_labrun(
        [
            "train",
            "-m",
            "hydra/launcher=slurm",
            *SMALL_JOBS,
            "seed=1,2",
            "trainer=ddp_cpu",
            "trainer.devices=2",
            *FAST,
        ],
        labrun_env(tmp_path, store),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if r.data.tags.get("labrun.role") == "parent"]
    children = [r for r in runs if r not in parents]
    assert len(parents) == 1 and len(children) == 2
    assert all(r.info.status == "FINISHED" for r in runs)
    host = socket.gethostname().split(".")[0]
    tags = [r.data.tags for r in sorted(children, key=lambda r: r.data.params["seed"])]
    assert [t["labrun.slurm.array_task_id"] for t in tags] == ["0", "1"]
    assert len({t["labrun.slurm.array_job_id"] for t in tags}) == 1
    assert all(t["labrun.slurm.job_id"].isdigit() for t in tags)
    assert all(t["labrun.slurm.nodelist"] == host for t in tags)
    assert all(t["labrun.slurm.ntasks"] == "2" for t in tags)
    assert all(t["labrun.slurm.restart_count"] == "0" for t in tags)
    assert all(t["mlflow.parentRunId"] == parents[0].info.run_id for t in tags)
    for run in children:
        logs = {a.path for a in client.list_artifacts(run.info.run_id, "slurm")}
        job = f"{run.data.tags['labrun.slurm.array_job_id']}_"
        job += run.data.tags["labrun.slurm.array_task_id"]
        assert {f"slurm/{job}_{t}_log.{k}" for t in (0, 1) for k in ("out", "err")} <= logs
        rank1 = Path(
            client.download_artifacts(run.info.run_id, f"slurm/{job}_1_log.err", str(tmp_path))
        )
        # the second rank is SLURM's task 1, in its own process: not relaunched by Lightning
        assert "GLOBAL_RANK: 1, MEMBER: 2/2" in rank1.read_text()


def start_pending_requeues() -> None:
    """A requeued job waits for a begin time SLURM sets (about two minutes); start it now."""
    out = subprocess.run(["squeue", "-h", "-o", "%i %r"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        job, _, reason = line.partition(" ")
        if reason.strip() == "BeginTime":
            subprocess.run(["scontrol", "update", f"jobid={job}", "starttime=now"], check=False)


def job_state(store: str) -> tuple[str, str, str, int] | None:
    """(SLURM job id, run status, restart count, last training step) of the sweep's one child
    run, read straight from the SQLite file (read-only: an MLflow client here could race the
    sweep creating the store's tables)."""
    query = (
        "SELECT j.value, u.status, r.value, (SELECT MAX(m.step) FROM metrics m "
        "WHERE m.run_uuid = u.run_uuid AND m.key = 'train/loss_step') FROM runs u "
        "JOIN tags j ON j.run_uuid = u.run_uuid AND j.key = 'labrun.slurm.job_id' "
        "JOIN tags r ON r.run_uuid = u.run_uuid AND r.key = 'labrun.slurm.restart_count'"
    )
    try:
        with sqlite3.connect(f"file:{store.removeprefix('sqlite:///')}?mode=ro", uri=True) as db:
            row = db.execute(query).fetchone()
    except sqlite3.Error:  # not made yet
        return None
    return (row[0], row[1], row[2], row[3] or 0) if row else None


def child_runs(store: str) -> list:
    if not Path(store.removeprefix("sqlite:///")).exists():
        return []
    client = MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return [r for r in runs if r.data.tags.get("labrun.role") != "parent"]


# A job of 320 steps on one thread: long enough to be stopped part-way.
REQUEUED = [
    "experiment=trec_lstm",
    "trainer=cpu",
    "trainer.max_epochs=5",  # about 45 s here: two stops fall inside it
    "+trainer.limit_train_batches=40",
    "+trainer.limit_val_batches=4",
    "+trainer.limit_test_batches=4",
    "~callbacks.progress_bar",
    "tracking.log_model=false",
    "trainer.log_every_n_steps=5",
    "seed=7",
]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    """The same job on this machine, not stopped: what a requeued job must end with."""
    home = tmp_path_factory.mktemp("uninterrupted")
    store = f"sqlite:///{home}/plain.db"
    done = run_labrun(["train", *REQUEUED], labrun_env(home, store))
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = child_runs(store)
    return final_metrics(run)


def final_metrics(run) -> dict[str, float]:
    return {k: v for k, v in run.data.metrics.items() if k.startswith(("test/", "val/"))}


def submit(
    argv: list[str], tmp_path: Path, store: str, launcher: list[str] = SMALL_JOBS
) -> subprocess.Popen:
    return subprocess.Popen(
        [str(labrun_command()), "train", "-m", "hydra/launcher=slurm", *launcher, *argv],
        env=labrun_env(tmp_path, store),
        cwd=ROOT,
        stdout=(tmp_path / "sweep.out").open("w"),
        stderr=subprocess.STDOUT,  # a file: a pipe nobody reads while polling would fill up
    )


def what_happened(tmp_path: Path) -> str:
    """The sweep's output and the tail of every SLURM log of its jobs: what a failure shows."""
    said = [(tmp_path / "sweep.out").read_text()[-2000:]]
    for log in sorted(tmp_path.glob("runs/**/.submitit/**/*_log.*")):
        said.append(f"--- {log.name}\n" + log.read_text(errors="replace")[-1500:])
    return "\n".join(said)


def test_a_requeued_job_continues_its_run_exactly(
    slurm: Path, uninterrupted: dict[str, float], tmp_path: Path, store: str
) -> None:
    """Both ways SLURM stops a job, in one job: `scontrol requeue` while it trains (SLURM's
    SIGTERM, the job's restart count gone up), then in the requeued job the time-limit warning
    (SIGUSR2, which `hydra.launcher.signal_delay_s` asks for; sent with `scancel --signal`
    because SLURM may send it up to a minute early). Each is a checkpoint at the next batch end,
    the run SCHEDULED, the job requeued and the same run reopened; the final metrics are the
    uninterrupted job's, bit for bit, and no step is logged twice."""
    sweep = submit([*REQUEUED, "hydra.launcher.signal_delay_s=30"], tmp_path, store)
    stops = [["scontrol", "requeue"], ["scancel", "--signal=USR2"]]
    last_step = -1  # where the last stop left the run: a later step means it trains again
    deadline = time.monotonic() + 480
    try:
        while sweep.poll() is None and time.monotonic() < deadline:
            state = job_state(store)
            if state and state[1] == "SCHEDULED":
                last_step = state[3]
            elif stops and state and state[1] == "RUNNING" and state[3] > max(last_step, 0):
                subprocess.run([*stops.pop(0), state[0]], check=True)
                last_step = 10**9  # until the run is SCHEDULED again
            start_pending_requeues()
            time.sleep(1)
        sweep.wait(timeout=60)
    except subprocess.TimeoutExpired:  # a sweep that hangs: killed, its jobs cancelled
        sweep.kill()
        subprocess.run(["scancel", "--user", str(os.getuid())], check=False)
        raise
    assert not stops and sweep.returncode == 0, what_happened(tmp_path)
    (run,) = child_runs(store)
    assert run.info.status == "FINISHED"
    assert run.data.tags["labrun.slurm.restart_count"] == "2"
    assert run.data.tags["labrun.requeued"] == "time limit near (SIGUSR2), requeue 2"
    client = MlflowClient(store)
    logs = [a.path for a in client.list_artifacts(run.info.run_id, "slurm")]
    out = next(p for p in logs if p.endswith("_0_log.out"))
    said = Path(client.download_artifacts(run.info.run_id, out, str(tmp_path))).read_text()
    assert "requeued by SLURM (SIGTERM), restart 1" in said  # the first stop, in SLURM's log
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss_step")]
    assert steps == sorted(set(steps))
    assert final_metrics(run) == uninterrupted
