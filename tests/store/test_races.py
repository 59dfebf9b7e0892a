"""Jobs that start together: a parallel sweep's first jobs open a new store, create the same
experiment and log the same dataset at the same moment, in a real SQLite store, and none may
fail for it."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from pathlib import Path

from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.tracking import MlflowClient

from labrun.store.client import again_if_raced, check_reachable, ensure_experiment

JOBS = 6


def together(work: Callable[[MlflowClient, str], str], store: str, names: list[str]) -> list:
    """`work(client, name)` in JOBS processes released at once, for each name in turn: what
    each returned, or the error it raised."""
    ctx = mp.get_context("fork")
    results = []
    for name in names:
        barrier, out = ctx.Barrier(JOBS), ctx.Queue()
        jobs = [
            ctx.Process(target=_job, args=(work, store, name, barrier, out)) for _ in range(JOBS)
        ]
        for p in jobs:
            p.start()
        results.append(sorted(out.get(timeout=120) for _ in jobs))
        for p in jobs:
            p.join(timeout=60)
    return results


def _job(work: Callable, store: str, name: str, barrier: mp.Barrier, out: mp.Queue) -> None:
    client = MlflowClient(store)
    client.search_experiments()  # the store is open before the race starts
    barrier.wait()
    try:
        out.put(work(client, name))
    except Exception as exc:  # reported to the test, which names it
        out.put(f"{type(exc).__name__}: {exc}"[:300])


def test_jobs_starting_together_all_create_the_same_experiment(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/mlflow.db"
    MlflowClient(store).search_experiments()

    def create(client: MlflowClient, name: str) -> str:
        return ensure_experiment(client, name, None)

    results = together(create, store, ["a", "b", "c"])
    client = MlflowClient(store)
    for name, ids in zip(["a", "b", "c"], results, strict=True):
        assert ids == [client.get_experiment_by_name(name).experiment_id] * JOBS, ids


def test_jobs_starting_together_all_log_the_same_dataset(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/mlflow.db"
    experiment_id = MlflowClient(store).create_experiment("together")

    def log(client: MlflowClient, name: str) -> str:
        run_id = client.create_run(experiment_id).info.run_id
        dataset = Dataset(name=name, digest="0123456789abcdef", source_type="local", source="{}")
        inputs = [DatasetInput(dataset, [InputTag("k", "v")])]
        again_if_raced(lambda: client.log_inputs(run_id, datasets=inputs))
        return "ok"

    names = ["trec-train", "trec-val", "trec-test"]  # three races, one after another
    assert together(log, store, names) == [["ok"] * JOBS] * 3
    client = MlflowClient(store)
    runs = client.search_runs([experiment_id])
    assert len(runs) == 3 * JOBS
    for run in runs:
        (logged,) = run.inputs.dataset_inputs  # each run links its one dataset
        assert logged.dataset.digest == "0123456789abcdef"


def _open_new(store: str, barrier: mp.Barrier, out: mp.Queue) -> None:
    barrier.wait()
    try:
        check_reachable(store, 10.0)  # what every labrun command does before its first read
        out.put(len(MlflowClient(store).search_experiments()))
    except Exception as exc:
        out.put(f"{type(exc).__name__}: {exc}"[:300])


def open_together(store: str) -> list:
    """JOBS fresh processes (nothing of MLflow's opened or cached yet) open `store` at once:
    what each saw (the number of experiments), or the error it raised."""
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(JOBS), ctx.Queue()
    jobs = [ctx.Process(target=_open_new, args=(store, barrier, out)) for _ in range(JOBS)]
    for p in jobs:
        p.start()
    results = [out.get(timeout=180) for _ in jobs]
    for p in jobs:
        p.join(timeout=60)
    return results


def test_jobs_starting_together_all_open_a_new_store(tmp_path: Path) -> None:
    """Two runs started at once on a store that does not exist yet both created and migrated
    its tables, and both failed ("table _alembic_tmp_tags already exists")."""
    for attempt in range(3):
        results = open_together(f"sqlite:///{tmp_path}/{attempt}/mlflow.db")
        assert results == [1] * JOBS, results  # each sees the one Default experiment
