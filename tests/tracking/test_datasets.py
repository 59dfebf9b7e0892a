"""Dataset inputs from jobs that start together: a parallel sweep's first jobs log the same
dataset into one experiment at the same moment, and none of them may fail for it."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.tracking import MlflowClient

from labrun.tracking.record import log_inputs

JOBS = 6


def job(store: str, experiment_id: str, name: str, barrier: mp.Barrier, out: mp.Queue) -> None:
    client = MlflowClient(store)
    run = client.create_run(experiment_id)
    dataset = Dataset(name=name, digest="0123456789abcdef", source_type="local", source="{}")
    barrier.wait()
    try:
        log_inputs(client, run.info.run_id, [DatasetInput(dataset, [InputTag("k", "v")])])
        out.put("ok")
    except Exception as exc:  # reported to the test, which names it
        out.put(f"{type(exc).__name__}: {exc}"[:300])


def test_jobs_starting_together_all_log_the_same_dataset(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(store)
    experiment_id = client.create_experiment("together")
    ctx = mp.get_context("fork")
    for name in ("trec-train", "trec-val", "trec-test"):  # three races, one after another
        barrier, out = ctx.Barrier(JOBS), ctx.Queue()
        jobs = [
            ctx.Process(target=job, args=(store, experiment_id, name, barrier, out))
            for _ in range(JOBS)
        ]
        for p in jobs:
            p.start()
        results = [out.get(timeout=120) for _ in jobs]
        for p in jobs:
            p.join(timeout=60)
        assert results == ["ok"] * JOBS, results
    runs = client.search_runs([experiment_id])
    assert len(runs) == 3 * JOBS
    for run in runs:
        (logged,) = run.inputs.dataset_inputs  # each run links its one dataset
        assert logged.dataset.digest == "0123456789abcdef"
