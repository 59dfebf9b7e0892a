"""`make bench BENCH_ARGS=--slurm`: sweeps on the one-node SLURM cluster of `make slurm`.

- submission to the first job running (SLURM's R state) and to its MLflow run opened;
- the cost of one requeue: seconds from `scontrol requeue` to the same run training again;
- a 4-trial grid through SLURM against the joblib launcher (2 processes) on this machine.

Writes benchmarks/slurm.json; bench.py puts it in BENCHMARKS.md.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "slurm.json"
LABRUN = str(Path(sys.executable).parent / "labrun")
TRIAL = [  # a short trial: 2 epochs of 40 batches, about 20 s here
    "experiment=trec_lstm",
    "trainer=cpu",
    "trainer.max_epochs=2",
    "+trainer.limit_train_batches=40",
    "+trainer.limit_val_batches=4",
    "+trainer.limit_test_batches=4",
    "~callbacks.progress_bar",
    "tracking.log_model=false",
    "trainer.log_every_n_steps=5",
]
SLURM = ["hydra/launcher=slurm", "hydra.launcher.mem_gb=3", "hydra.launcher.timeout_min=10"]


def env_in(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "LABRUN_RUN_DIR": str(home / "runs"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home}/mlflow.db",
    }


def trial_state(home: Path) -> tuple[str, str, int] | None:
    """(SLURM job id, run status, last training step) of the sweep's one trial, read
    straight from the SQLite file, read-only: an MLflow client here would race the sweep
    creating the store's tables (and hung doing so)."""
    query = (
        "SELECT j.value, u.status, (SELECT MAX(m.step) FROM metrics m "
        "WHERE m.run_uuid = u.run_uuid AND m.key = 'train/loss_step') FROM runs u "
        "JOIN tags j ON j.run_uuid = u.run_uuid AND j.key = 'labrun.slurm.job_id'"
    )
    db = home / "mlflow.db"
    if not db.exists():
        return None
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
            row = conn.execute(query).fetchone()
    except sqlite3.Error:  # tables not made yet
        return None
    return (row[0], row[1], row[2] or 0) if row else None


def until(event: Any, timeout_s: float = 600, every_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := event():
            return found
        time.sleep(every_s)
    raise TimeoutError("gave up waiting")


def squeue_running() -> bool:
    out = subprocess.run(["squeue", "-h", "-o", "%T"], capture_output=True, text=True).stdout
    return "RUNNING" in out.split()


def sweep_of(home: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [LABRUN, "train", "-m", *SLURM, *TRIAL, *extra],
        env=env_in(home),
        cwd=ROOT,
        stdout=(home / "sweep.out").open("w"),
        stderr=subprocess.STDOUT,
    )


def finished(sweep: subprocess.Popen, home: Path) -> None:
    if sweep.wait(timeout=600) != 0:
        raise RuntimeError((home / "sweep.out").read_text()[-2000:])


def first_job() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        t0 = time.perf_counter()
        sweep = sweep_of(home, "seed=1")
        until(squeue_running)
        running = time.perf_counter() - t0
        until(lambda: trial_state(home))
        opened = time.perf_counter() - t0
        finished(sweep, home)
        return {"job_running_s": running, "run_opened_s": opened}


def requeue_cost() -> dict[str, float]:
    from labrun.sweep.cluster import start_pending_requeues

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        sweep = sweep_of(home, "trainer.max_epochs=5", "seed=2")
        state = until(lambda: (s := trial_state(home)) and s[1] == "RUNNING" and s[2] > 0 and s)
        t0 = time.perf_counter()
        subprocess.run(["scontrol", "requeue", state[0]], check=True)
        state = until(lambda: (s := trial_state(home)) and s[1] == "SCHEDULED" and s)
        scheduled = time.perf_counter() - t0
        stopped_at = state[2]

        def training_again() -> bool:
            start_pending_requeues()
            s = trial_state(home)
            return bool(s) and s[1] == "RUNNING" and s[2] > stopped_at

        until(training_again, every_s=0.5)
        back = time.perf_counter() - t0
        finished(sweep, home)
        return {"to_checkpoint_and_scheduled_s": scheduled, "to_training_again_s": back}


def grid_wall(launcher: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        done = subprocess.run(
            [LABRUN, "train", "-m", *launcher, *TRIAL, "seed=1,2,3,4"],
            env=env_in(Path(tmp)),
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-2000:])
        return time.perf_counter() - t0


def measure() -> dict[str, Any]:
    from labrun.sweep import cluster

    cluster.start(ROOT / "runs" / "slurm")
    slurm_s = grid_wall(SLURM)
    joblib_s = grid_wall(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
    return {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "first_job": first_job(),
        "requeue": requeue_cost(),
        "grid_4_trials": {"slurm_s": slurm_s, "joblib_s": joblib_s, "ratio": slurm_s / joblib_s},
    }


def section() -> list[str]:
    """BENCHMARKS.md's SLURM section, from the last benchmarks/slurm.json."""
    if not RESULTS.is_file():
        return []
    r = json.loads(RESULTS.read_text())
    f, q, g = r["first_job"], r["requeue"], r["grid_4_trials"]
    return [
        "",
        "## Sweeps on SLURM",
        "",
        f"The one-node cluster of `make slurm` on this machine, measured {r['when']} "
        "(`make bench BENCH_ARGS=--slurm`). Trials: `trec_lstm`, 2 epochs of 40 batches.",
        "",
        "| figure | seconds |",
        "| --- | --- |",
        f"| submission to the first job running (SLURM state R) | {f['job_running_s']:.1f} |",
        f"| submission to its MLflow run opened | {f['run_opened_s']:.1f} |",
        "| `scontrol requeue` to checkpoint written and run SCHEDULED | "
        f"{q['to_checkpoint_and_scheduled_s']:.1f} |",
        f"| `scontrol requeue` to the same run training again | {q['to_training_again_s']:.1f} |",
        f"| 4-trial grid through SLURM (2 jobs at a time) | {g['slurm_s']:.1f} |",
        f"| the same grid, joblib launcher with 2 processes | {g['joblib_s']:.1f} |",
        f"| ratio SLURM / joblib | {g['ratio']:.2f} |",
        "",
        "Most of the first two figures is labrun's own start-up, twice: the submitting command's "
        "(imports, composing every job's config, the code snapshot) and the job's (imports, "
        "12-17 s here). The requeue figure is the "
        "signal, the checkpoint at the next batch end, the run closed SCHEDULED, the job "
        "requeued and started again at once (`labrun.sweep.cluster.start_pending_requeues`; "
        "a real cluster holds a requeued job about 2 minutes, SLURM's BeginTime) and its "
        "start-up until the same run logs a new step. Through SLURM every job pays its own "
        "start-up and the submitting process waits for sacct, which the joblib pool does not.",
    ]


def main() -> None:
    RESULTS.write_text(json.dumps(measure(), indent=2))
    print("\n".join(section()))


if __name__ == "__main__":
    main()
