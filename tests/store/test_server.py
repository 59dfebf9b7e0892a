"""A real team server: PostgreSQL plus an MLflow tracking server with proxied artifacts,
started once for these tests, as `make server` starts it."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from labrun.store import server
from tests.helpers import FAST, labrun_env, run_labrun
from tests.store.test_races import JOBS, open_together


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def team() -> Iterator[server.Server]:
    folder = Path(tempfile.mkdtemp(prefix="labrun-server-"))
    info = server.start(folder, free_port(), free_port())
    yield info
    server.stop(folder, purge=True)


def env_for(tmp_path: Path, info: server.Server) -> dict[str, str]:
    """labrun's own retry settings (store/client.py): a server closing an idle keep-alive
    connection as a request goes out is a dropped connection that one retry survives, as it
    must for users; with retries off, a long sweep failed on it now and then."""
    return labrun_env(tmp_path, info.uri, MLFLOW_HTTP_REQUEST_TIMEOUT="10")


def test_make_server_answers_and_stores_in_postgresql(team: server.Server) -> None:
    client = MlflowClient(team.uri)
    exp = client.create_experiment(f"probe-{time.time_ns()}")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "x", 1.0)
    client.log_text(run.info.run_id, "hello", "probe.txt")
    assert client.get_run(run.info.run_id).data.metrics["x"] == 1.0
    assert client.get_experiment(exp).artifact_location.startswith("mlflow-artifacts:")
    assert any((Path(team.folder) / "artifacts").rglob("probe.txt"))  # proxied to the server
    with server.psycopg2_connect(team.pg_port, "mlflow") as conn, conn.cursor() as cur:
        cur.execute("select count(*) from runs where run_uuid = %s", (run.info.run_id,))
        assert cur.fetchone()[0] == 1


def test_jobs_starting_together_all_open_a_new_postgresql_database(team: server.Server) -> None:
    """The SQLite race of tests/store/test_races.py on PostgreSQL: jobs pointed straight at a
    new database all created and migrated MLflow's tables at once."""
    for attempt in range(3):
        name = f"fresh_{attempt}_{time.time_ns()}"
        conn = server.psycopg2_connect(team.pg_port, "postgres")
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
        conn.close()
        results = open_together(team.database_uri(name))
        assert results == [1] * JOBS, results  # each sees the one Default experiment


def test_an_unreachable_postgresql_store_is_one_line(tmp_path: Path) -> None:
    uri = f"postgresql+psycopg2://labrun:secret@127.0.0.1:{free_port()}/mlflow"
    done = run_labrun(["runs"], labrun_env(tmp_path, uri))
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(
        "labrun: error: cannot reach the PostgreSQL store postgresql+psycopg2://labrun:***@"
    )
    assert "start the database or fix tracking.uri" in line and "secret" not in line


def test_a_postgresql_uri_without_its_driver_is_one_line(tmp_path: Path) -> None:
    """SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which labrun does not install:
    this was a ModuleNotFoundError."""
    assert importlib.util.find_spec("psycopg") is None  # labrun installs psycopg2 only
    done = run_labrun(["runs"], labrun_env(tmp_path, "postgresql://labrun@127.0.0.1:9/mlflow"))
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("labrun: error: no PostgreSQL driver for postgresql:// "), line
    assert "write postgresql+psycopg2://" in line


def test_two_worker_sweep_against_the_server_loses_nothing(
    tmp_path: Path, team: server.Server
) -> None:
    """Two workers share one Optuna study in PostgreSQL and log into the MLflow server, while
    a reader polls the server: every trial run is complete and every read was consistent."""
    study = f"server-sweep-{time.time_ns()}"
    env = env_for(tmp_path, team)
    args = [
        "sweep",
        "experiment=trec_lstm",
        "hparams_search=trec_optuna",
        "hparams_search.pruner.type=none",
        f"hparams_search.study_name={study}",
        f"hparams_search.storage={team.database_uri('optuna')}",
        "hparams_search.n_trials=4",
        "tracking=server",
        *FAST,
        "--workers",
        "2",
    ]
    client = MlflowClient(team.uri)
    seen: list[str] = []
    stop = threading.Event()

    def read() -> None:  # what a colleague sees while the sweep runs
        while not stop.is_set():
            exp = client.get_experiment_by_name("trec_lstm")
            if exp is not None:
                for run in client.search_runs(
                    [exp.experiment_id], f"tags.`labrun.sweep_id` = '{study}'"
                ):
                    trial = run.data.tags.get("labrun.role") != "parent"
                    if (
                        trial
                        and run.info.status == "FINISHED"
                        and "test/acc" not in run.data.metrics
                    ):
                        seen.append(f"FINISHED without test/acc: {run.info.run_id}")
                seen.append("ok")
            time.sleep(0.5)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    done = run_labrun(args, env, timeout=600)
    stop.set()
    reader.join(timeout=10)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ok" in seen and not [s for s in seen if s != "ok"], seen[:5]

    exp = client.get_experiment_by_name("trec_lstm")
    runs = client.search_runs([exp.experiment_id], f"tags.`labrun.sweep_id` = '{study}'")
    trials = [r for r in runs if r.data.tags.get("labrun.role") != "parent"]
    assert 4 <= len(trials) <= 5 and {r.info.status for r in trials} == {"FINISHED"}
    for run in trials:
        assert {"test/acc", "val/acc", "train/loss_epoch"} <= set(run.data.metrics)
        assert len(client.get_metric_history(run.info.run_id, "val/acc")) == 2  # both epochs
        stored = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config", "provenance", "checkpoints", "metrics"} <= stored
        assert client.list_artifacts(run.info.run_id, "checkpoints")  # proxied uploads
    trials_in_pg = optuna.load_study(study_name=study, storage=team.database_uri("optuna")).trials
    assert len(trials_in_pg) == len(trials)
    assert {t.state.name for t in trials_in_pg} == {"COMPLETE"}


def test_server_going_down_mid_run_is_clear_and_resumable(
    tmp_path: Path, team: server.Server
) -> None:
    """The team's MLflow server stops while a run trains (PostgreSQL stays up), then comes
    back on the same database: the run said so in one line, and `labrun resume` finishes it."""
    env = env_for(tmp_path, team)
    args = [
        "train",
        "tracking=server",
        "trainer.max_epochs=5",  # stopped after the first: four left to resume
        "+trainer.limit_train_batches=20",
        "+trainer.limit_val_batches=2",
        "model.embedding_dim=64",  # a quarter of the recipe's: this is about the store
        "model.hidden_size=64",
        "~callbacks.early_stopping",
        "~callbacks.progress_bar",
        "tracking.log_model=false",
        "trainer.log_every_n_steps=2",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "labrun", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    while time.time() < deadline and not list(tmp_path.glob("runs/train/*/checkpoints/last.ckpt")):
        time.sleep(0.2)
    server.stop_mlflow(team)
    try:
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 2, stderr[-3000:]
        (line,) = [ln for ln in stderr.splitlines() if ln.startswith("labrun: error")]
        assert "lost the tracking store" in line and "labrun resume" in line
        run_id = line.split("labrun resume ")[1].split()[0]
        assert list(tmp_path.glob("runs/train/*/checkpoints/last.ckpt"))  # kept
    finally:  # back, on the same database, for whatever runs after
        back = server.start(Path(team.folder), team.port, team.pg_port)
    client = MlflowClient(back.uri)
    assert client.get_run(run_id).info.status == "RUNNING"
    resumed = run_labrun(["resume", run_id, "--tracking-uri", back.uri], env, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and "test/acc" in run.data.metrics
    assert max(m.step for m in client.get_metric_history(run_id, "val/acc")) > 0


def test_missing_postgresql_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "POSTGRES_ROOTS", (Path("/nonexistent"),))
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(server.TrackingError, match="PostgreSQL is not installed; install it"):
        server.postgres_bin()
