"""Sweeps on a real SLURM: the one-node cluster `make slurm` starts (munge, slurmctld, slurmd on
this machine), jobs submitted through submitit and Hydra's launcher, real DDP ranks that SLURM
starts, a real MLflow store."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from labrun.sweep.cluster import start_pending_requeues
from tests.helpers import (
    FAST,
    ROOT,
    edit,
    labrun_command,
    labrun_env,
    new_project,
    run_labrun,
    wait_for,
)

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


def test_a_second_cluster_is_refused_while_one_runs(slurm: Path, tmp_path: Path) -> None:
    """Both would listen on SLURM's ports, and /etc/slurm/slurm.conf would be repointed under
    the running one: one line naming the running cluster and how to stop it, nothing changed."""
    from labrun.sweep import cluster

    linked = cluster.SYSTEM_CONF.resolve()
    with pytest.raises(cluster.ClusterError, match="is running; stop it first") as refused:
        cluster.start(tmp_path / "other")
    assert f"labrun slurm stop --dir {slurm.resolve()}" in str(refused.value)
    assert cluster.SYSTEM_CONF.resolve() == linked
    assert not (tmp_path / "other" / "slurmctld.pid").exists()


SMALL_JOBS = ["hydra.launcher.mem_gb=6", "hydra.launcher.timeout_min=10"]  # 2 ranks: ~1.2 GB each


def test_a_ddp_sweep_on_slurm_is_labrun_runs(slurm: Path, tmp_path: Path, store: str) -> None:
    """2 jobs of 2 DDP tasks each, one array: SLURM starts both ranks (nothing relaunched), a
    job is a child run with its SLURM job, array index, nodes and requeue count as tags and
    SLURM's stdout/stderr of both tasks as artifacts. Job 1 needs more memory than its
    `mem_gb`: SLURM kills it, its run ends FAILED with SLURM's reason, the other still
    finishes, and the sweep exits 1 naming it."""
    proc = run_labrun(
        [
            "train",
            "-m",
            "hydra/launcher=slurm",
            *SMALL_JOBS,
            "model.embedding_dim=32,40000",  # 40000: ~5 GB a rank, over mem_gb=6 for two
            "trainer=ddp_cpu",
            "trainer.devices=2",
            *FAST,
        ],
        labrun_env(tmp_path, store),
        timeout=600,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "had failed trials: 1 FAILED (FAILED: " in last and "exceeded memory limit" in last
    client = MlflowClient(store)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    parents = [r for r in runs if r.data.tags.get("labrun.role") == "parent"]
    by_dim = {r.data.params["model.embedding_dim"]: r for r in runs if r not in parents}
    assert len(parents) == 1 and parents[0].info.status == "FAILED"
    killed = by_dim.pop("40000")
    assert killed.info.status == "FAILED" and killed.data.tags["labrun.slurm.state"] == "FAILED"
    assert "exceeded memory limit (" in killed.data.tags["labrun.slurm.reason"]
    children = list(by_dim.values())
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    host = socket.gethostname().split(".")[0]
    tags = [r.data.tags for r in children]
    assert [t["labrun.slurm.array_task_id"] for t in tags] == ["0"]
    if "labrun.slurm.array_job_id" in killed.data.tags:  # it opened its run before it was killed
        assert killed.data.tags["labrun.slurm.array_task_id"] == "1"
        assert killed.data.tags["labrun.slurm.array_job_id"] == tags[0]["labrun.slurm.array_job_id"]
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
        rank1 = "".join(
            Path(
                client.download_artifacts(
                    run.info.run_id, f"slurm/{job}_1_log.{kind}", str(tmp_path)
                )
            ).read_text()
            for kind in ("out", "err")
        )
        # the second rank is SLURM's task 1, in its own process: not relaunched by Lightning
        assert "GLOBAL_RANK: 1, MEMBER: 2/2" in rank1


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


# A job of 120 steps on one thread: long enough to be stopped part-way, twice.
REQUEUED = [
    "experiment=trec_lstm",
    "trainer=cpu",
    "trainer.max_epochs=3",  # about 20 s of training here: two stops fall inside it
    "+trainer.limit_train_batches=40",
    "+trainer.limit_val_batches=4",
    "+trainer.limit_test_batches=4",
    "~callbacks.progress_bar",
    "tracking.log_model=false",
    "trainer.log_every_n_steps=5",
    "logger.mlflow.flush_every_s=1",  # steps in the store within a second: the test sees them
    "seed=7",
    "model.ema_decay=0.9",  # the average must come back whole from a requeue too
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


def load_json(client: MlflowClient, run_id: str, path: str, into: Path) -> dict:
    return json.loads(Path(client.download_artifacts(run_id, path, str(into))).read_text())


def what_happened(tmp_path: Path) -> str:
    """The sweep's output and the tail of every SLURM log of its jobs: what a failure shows."""
    out = tmp_path / "sweep.out"
    said = [out.read_text()[-2000:] if out.is_file() else ""]
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


def test_a_detached_sweep_closes_itself_and_says_what_slurm_said(
    slurm: Path, tmp_path: Path, store: str
) -> None:
    """`--detach` submits three jobs and exits; nothing waits for them. Job 1 needs more memory
    than its `mem_gb` (SLURM kills it), job 2 is `scancel`led while it trains, job 0 finishes.
    Each run ends with SLURM's word (OUT_OF_MEMORY: FAILED, CANCELLED: KILLED), `sweep status`
    follows the sweep from the store alone, and the last job closes the parent FAILED."""
    env = labrun_env(tmp_path, store)
    argv = [
        "train",
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.mem_gb=3",
        "hydra.launcher.timeout_min=10",
        "model.embedding_dim=32,40000,33",  # job 1: ~5 GB of embeddings and Adam's state
        *[o for o in FAST if not o.startswith("trainer.max_epochs")],
        "trainer.max_epochs=20",  # 60 steps: job 2 trains long enough to be seen and cancelled
        "~callbacks.early_stopping",  # which ended the jobs after ~5 epochs, before that
        "logger.mlflow.flush_every_s=1",
        "--detach",
    ]
    sub = run_labrun(argv, env, timeout=120)
    assert sub.returncode == 0, sub.stderr[-3000:]
    sweep_id = re.search(r"labrun sweep status (\S+) --wait", sub.stdout).group(1)
    client = MlflowClient(store)

    def status() -> dict:
        seen = run_labrun(["sweep", "status", sweep_id, "--json"], env)
        assert seen.returncode in (0, 1), seen.stderr[-2000:]  # 1: the sweep ended FAILED
        return json.loads(seen.stdout)

    first = status()
    assert first["status"] == "RUNNING" and sum(first["counts"].values()) == 3

    def job_2_training() -> str | None:
        for run in child_runs(store):
            tags = run.data.tags
            if tags["labrun.trial"] == "2" and run.info.status == "RUNNING":
                return tags["labrun.slurm.job_id"]
        return None

    try:
        try:
            job_2 = wait_for(job_2_training, 300, "job 2 to train")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{what_happened(tmp_path)}") from None
        subprocess.run(["scancel", job_2], check=True)
        waited = run_labrun(
            ["sweep", "status", sweep_id, "--wait", "--every", "2"], env, timeout=400
        )
    finally:
        subprocess.run(["scancel", "--user", str(os.getuid())], check=False)
    assert waited.returncode == 1, waited.stdout[-2000:] + waited.stderr[-2000:]
    assert f"sweep {sweep_id} FAILED: 0 queued, 0 running, 1 finished, 2 failed" in waited.stdout
    # SLURM's account of a job comes once the job has left the node: status converges to it
    wait_for(lambda: status()["trials"][2]["slurm_state"], 60, "SLURM's state of job 2", 1)
    runs = {int(r.data.tags["labrun.trial"]): r for r in child_runs(store)}
    assert runs[0].info.status == "FINISHED" and "labrun.slurm.state" not in runs[0].data.tags
    # memory enforced by jobacct_gather (no cgroups on this node): sacct says FAILED, the job's
    # log says why (with cgroups sacct says OUT_OF_MEMORY itself)
    assert (runs[1].info.status, runs[1].data.tags["labrun.slurm.state"]) == ("FAILED", "FAILED")
    assert "exceeded memory limit (" in runs[1].data.tags["labrun.slurm.reason"]
    assert "exceeded memory limit" in runs[1].data.tags["labrun.error"]
    logs = {a.path for a in client.list_artifacts(runs[1].info.run_id, "slurm")}
    assert any(p.endswith("_0_log.err") for p in logs)  # stored for the run that could not
    assert (runs[2].info.status, runs[2].data.tags["labrun.slurm.state"]) == (
        "KILLED",
        "CANCELLED",
    )
    (parent,) = [
        r
        for r in client.search_runs([runs[0].info.experiment_id])
        if r.data.tags.get("labrun.role") == "parent"
    ]
    assert parent.info.status == "FAILED" and parent.data.tags["labrun.failed_trials"] == "2"
    assert parent.data.tags["labrun.best_run"] == runs[0].info.run_id


def test_jobs_run_the_code_they_were_submitted_with(
    slurm: Path, tmp_path: Path, store: str
) -> None:
    """A user's project sweeps on SLURM, its job held, and Ctrl-C stops the waiting process:
    the sweep goes on detached, saying how to follow it. Then the model file and the experiment
    config are edited, and only then does the job start. The job runs the code and config of
    the submission (the sweep's snapshot): it finishes, its provenance names the submitted
    files and a clean tree, as the parent's snapshot record says, and it closes the sweep."""
    project = new_project(tmp_path, "lab_frozen")
    env = labrun_env(
        tmp_path, store, PYTHONPATH=str(project / "src"), LABRUN_DATA_DIR=str(project / "data")
    )
    argv = ["train", "-m", "hydra/launcher=slurm", *SMALL_JOBS, "experiment=example"]
    argv += ["+hydra.launcher.additional_parameters.hold=true", "tracking.log_model=false"]
    sub = subprocess.Popen(
        [str(labrun_command()), *argv, "trainer.max_epochs=2", "seed=1"],
        env=env,
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        squeue = ["squeue", "-h", "-o", "%F"]
        wait_for(lambda: subprocess.run(squeue, capture_output=True, text=True).stdout, 120, "job")
        sub.send_signal(signal.SIGINT)  # Ctrl-C
        _, err = sub.communicate(timeout=60)
    finally:
        sub.kill()
    assert sub.returncode == 130, err[-3000:]
    said = re.search(
        r"labrun: signal 2: sweep (\S+) goes on in SLURM without this process; "
        r"follow it with: labrun sweep status (\S+) --wait",
        err,
    )
    assert said and said.group(1) == said.group(2), err[-3000:]
    sweep_id = said.group(1)
    model = project / "src" / "lab_frozen" / "model.py"
    model.write_text(model.read_text() + '\nraise RuntimeError("edited after submission")\n')
    edit(project / "conf" / "experiment" / "example.yaml", "tags: [", "tags: [edited, ")
    held = subprocess.run(["squeue", "-h", "-o", "%F"], capture_output=True, text=True).stdout
    subprocess.run(["scontrol", "release", held.split()[0]], check=True)
    try:
        waited = run_labrun(
            ["sweep", "status", sweep_id, "--wait", "--every", "2"], env, timeout=400
        )
    finally:
        subprocess.run(["scancel", "--user", str(os.getuid())], check=False)
    assert waited.returncode == 0, waited.stdout[-2000:] + what_happened(tmp_path)
    (run,) = child_runs(store)
    assert run.info.status == "FINISHED" and "edited" not in run.data.params["tags"]
    client = MlflowClient(store)
    parent = client.get_run(run.data.tags["mlflow.parentRunId"])
    assert parent.info.status == "FINISHED"
    frozen = load_json(client, parent.info.run_id, "snapshot/code.json", tmp_path)["packages"]
    prov = load_json(client, run.info.run_id, "provenance/provenance.json", tmp_path)
    ran = prov["code"]["lab_frozen"]
    assert ran["sha256"] == frozen["lab_frozen"]["sha256"]
    assert ran["snapshot"].startswith(parent.data.tags["labrun.snapshot"])
    assert ran["commit"] == frozen["lab_frozen"]["commit"] and ran["dirty"] is False
    assert prov["git"]["dirty"] is False  # the project's tree as submitted, not as edited


def test_a_job_that_fails_before_its_run_opens_is_a_failed_trial(
    slurm: Path, tmp_path: Path, store: str
) -> None:
    """The job's code breaks on its node (here: the sweep's snapshot of the user's model raises
    on import) before any run opens: the trial still gets a FAILED run saying why, and the
    detached sweep is closed FAILED by that job, not left RUNNING with a trial "queued"."""
    project = new_project(tmp_path, "lab_broken")
    env = labrun_env(
        tmp_path, store, PYTHONPATH=str(project / "src"), LABRUN_DATA_DIR=str(project / "data")
    )
    argv = ["train", "-m", "hydra/launcher=slurm", *SMALL_JOBS, "experiment=example", "seed=1"]
    argv += ["+hydra.launcher.additional_parameters.hold=true", "--detach"]
    sub = run_labrun(argv, env, cwd=project)
    assert sub.returncode == 0, sub.stderr[-3000:]
    sweep_id = re.search(r"labrun sweep status (\S+) --wait", sub.stdout).group(1)
    (model,) = (tmp_path / "runs").glob("**/code/**/lab_broken/model.py")  # the snapshot's
    model.write_text(model.read_text() + '\nraise RuntimeError("broken on the node")\n')
    held = subprocess.run(["squeue", "-h", "-o", "%F"], capture_output=True, text=True).stdout
    subprocess.run(["scontrol", "release", held.split()[0]], check=True)
    try:
        waited = run_labrun(
            ["sweep", "status", sweep_id, "--wait", "--every", "2"], env, timeout=300
        )
    finally:
        subprocess.run(["scancel", "--user", str(os.getuid())], check=False)
    assert waited.returncode == 1, waited.stdout[-2000:] + what_happened(tmp_path)
    assert f"sweep {sweep_id} FAILED: 0 queued, 0 running, 0 finished, 1 failed" in waited.stdout
    (run,) = child_runs(store)
    assert run.info.status == "FAILED" and run.data.tags["labrun.trial"] == "0"
    assert "broken on the node" in run.data.tags["labrun.error"]
    assert run.data.tags["labrun.slurm.job_id"].isdigit()


def test_a_search_runs_its_workers_as_slurm_jobs(slurm: Path, tmp_path: Path, store: str) -> None:
    """`labrun sweep ... hydra/launcher=slurm --workers 2`: two SLURM jobs share one study (in
    Optuna's journal file), each trains trials of its own; one parent holds them all."""
    journal = tmp_path / "shared" / "study.journal"
    argv = ["sweep", "experiment=trec_lstm", "hparams_search=trec_optuna", *FAST]
    argv += ["hparams_search.pruner.type=none", "hparams_search.n_trials=4"]
    argv += [f"hparams_search.storage=journal:{journal}", "hydra/launcher=slurm", *SMALL_JOBS]
    done = run_labrun([*argv, "--workers", "2"], labrun_env(tmp_path, store), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:] + what_happened(tmp_path)
    trials = child_runs(store)
    assert 4 <= len(trials) <= 5 and {r.info.status for r in trials} == {"FINISHED"}
    jobs = {r.data.tags["labrun.slurm.job_id"] for r in trials}
    assert len(jobs) == 2, jobs  # both workers trained, each in its own SLURM job
    assert len({r.data.tags["labrun.trial"] for r in trials}) == len(trials)
    # each worker samples with its own seed: no two trials try the same learning rate
    assert len({r.data.params["model.optimizer.lr"] for r in trials}) == len(trials)
    assert journal.is_file() and not (tmp_path / "runs" / "optuna.db").exists()
    client = MlflowClient(store)
    (parent,) = [
        r
        for r in client.search_runs([trials[0].info.experiment_id])
        if r.data.tags.get("labrun.role") == "parent"
    ]
    assert parent.info.status == "FINISHED" and parent.data.tags["labrun.trials"] == str(
        len(trials)
    )
