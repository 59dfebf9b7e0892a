"""Grids (Hydra multirun), Optuna searches and `labrun compare` against a real MLflow store."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
from pathlib import Path
from subprocess import PIPE
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import (
    FAST,
    ROOT,
    artifact_paths,
    labrun_command,
    labrun_env,
    run_labrun,
    wait_for,
)


def load_study(tmp_path: Path) -> Any:
    """The sweep tests' Optuna study, where `labrun sweep` keeps it by default."""
    import optuna

    return optuna.load_study(
        study_name="trec_lstm-optuna", storage=f"sqlite:///{tmp_path}/runs/optuna.db"
    )


def children(client: MlflowClient, parent_id: str) -> list:
    parent = client.get_run(parent_id)
    return client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )


def parents(client: MlflowClient, experiment: str = "trec_lstm") -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], "tags.`labrun.role` = 'parent'")


def dashboard_trials(storage: str, study_name: str) -> list[float]:
    """`make dashboard` over `storage`, asked over HTTP for the study's trial values."""
    import socket
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    make = ["make", "-s", "-C", str(ROOT), "dashboard", f"DASHBOARD_PORT={port}"]
    env = {**os.environ, "OPTUNA_STORAGE": storage}
    proc = subprocess.Popen(
        make, env=env, stdout=PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/studies", timeout=5) as answer:
                    studies = json.load(answer)["study_summaries"]
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
                time.sleep(0.5)
        (found,) = [s for s in studies if s["study_name"] == study_name]
        with urllib.request.urlopen(f"{url}/studies/{found['study_id']}", timeout=10) as answer:
            trials = json.load(answer)["trials"]
        return [t["values"][0] for t in trials]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


SEARCH = [
    "experiment=trec_lstm",
    "hparams_search=trec_optuna",
    *FAST,
    "hparams_search.pruner.type=none",
]


def test_grid_is_one_parent_with_a_child_per_job(tmp_path: Path, store: str) -> None:
    with_models = [a for a in FAST if a != "tracking.log_model=false"]
    grid = ["model.hidden_size=16,32", "seed=1,2", "tracking.register_as=trec-best"]
    proc = run_labrun(["train", "-m", *grid, *with_models], labrun_env(tmp_path, store))
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(store)
    (parent,) = parents(client)
    assert parent.info.status == "FINISHED"
    kids = children(client, parent.info.run_id)
    assert len(kids) == 4 and {k.info.status for k in kids} == {"FINISHED"}
    assert sorted(int(k.data.tags["labrun.trial"]) for k in kids) == [0, 1, 2, 3]
    assert {k.data.tags["labrun.sweep_id"] for k in kids} == {parent.data.tags["labrun.sweep_id"]}
    assert {(k.data.params["model.hidden_size"], k.data.params["seed"]) for k in kids} == {
        ("16", "1"),
        ("16", "2"),
        ("32", "1"),
        ("32", "2"),
    }
    summary = json.loads(
        Path(
            client.download_artifacts(parent.info.run_id, "sweep/summary.json", str(tmp_path))
        ).read_text()
    )
    assert summary["trials"] == 4 and summary["failed"] == 0
    assert set(summary["params"]) == {"model.hidden_size", "seed", "data.shuffle_seed"}
    top = max(k.data.metrics["val/acc"] for k in kids)  # a tie goes to the earlier trial
    tied = [k for k in kids if k.data.metrics["val/acc"] == top]
    best = min(tied, key=lambda k: int(k.data.tags["labrun.trial"]))
    assert parent.data.tags["labrun.best_run"] == best.info.run_id
    assert parent.data.metrics["best/val/acc"] == best.data.metrics["val/acc"]
    # tracking.register_as: the best trial's model, and only it, registered with alias best
    (version,) = client.search_model_versions("name = 'trec-best'")
    assert client.get_model_version_by_alias("trec-best", "best").version == version.version
    assert version.run_id == best.info.run_id
    import mlflow

    mlflow.set_tracking_uri(store)
    loaded = mlflow.pytorch.load_model("models:/trec-best@best")
    assert len(loaded.predict(["Who wrote Hamlet ?"])) == 1

    # the sweep's best trial rerun by the sweep's id: a new parent, linked, one verdict
    sweep_id = parent.data.tags["labrun.sweep_id"]
    again = run_labrun(["rerun", sweep_id, "--trials", "best"], labrun_env(tmp_path, store))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 reproduced, 0 consistent, 0 differs" in again.stdout
    (new_parent,) = [p for p in parents(client) if p.info.run_id != parent.info.run_id]
    assert new_parent.data.tags["labrun.rerun_of"] == parent.info.run_id
    assert new_parent.data.tags["labrun.verdicts"] == "1 reproduced, 0 consistent, 0 differs"
    assert new_parent.info.status == "FINISHED"
    (trial,) = children(client, new_parent.info.run_id)
    assert trial.data.tags["labrun.rerun_of"] == best.info.run_id
    assert trial.data.tags["labrun.trial"] == best.data.tags["labrun.trial"]
    assert trial.data.metrics["val/acc"] == best.data.metrics["val/acc"]


def test_a_failed_job_loses_nothing_else(tmp_path: Path, store: str) -> None:
    """One job's test file is missing (found only when that job reads its data: a bad value
    would be refused before the sweep starts); the other job still finishes and is counted."""
    test_files = "data.files.test=text/trec/TREC_10.label,text/trec/missing.label"
    proc = run_labrun(["train", "-m", test_files, *FAST], labrun_env(tmp_path, store))
    assert proc.returncode == 1
    assert "had failed trials: 1 FAILED;" in proc.stderr.strip().splitlines()[-1]
    client = MlflowClient(store)
    (parent,) = parents(client)
    assert parent.info.status == "FAILED" and parent.data.tags["labrun.failed_trials"] == "1"
    kids = {k.data.params["data.files.test"]: k for k in children(client, parent.info.run_id)}
    good, bad = kids["text/trec/TREC_10.label"], kids["text/trec/missing.label"]
    assert good.info.status == "FINISHED" and "test/acc" in good.data.metrics
    assert bad.info.status == "FAILED"


def test_a_hydra_interpolation_names_each_jobs_experiment(tmp_path: Path, store: str) -> None:
    """`tracking.experiment=mr_lstm-on-${hydra:runtime.choices.data}`: the sweep's parent reads
    the config before any job has set Hydra's runtime, and each job lands in its own experiment
    (the quality benchmark's sweep over sentence sets)."""
    grid = [
        "experiment=mr_lstm",
        "data=cr,subj",
        "tracking.experiment=on-${hydra:runtime.choices.data}",
    ]
    proc = run_labrun(["train", "-m", *grid, *FAST], labrun_env(tmp_path, store))
    assert proc.returncode == 0, proc.stderr[-2000:]
    client = MlflowClient(store)
    for data in ("cr", "subj"):
        (run,) = client.search_runs([client.get_experiment_by_name(f"on-{data}").experiment_id])
        assert run.info.status == "FINISHED" and "test/acc" in run.data.metrics
    (parent,) = parents(client, "mr_lstm")  # its summary finds the jobs in their experiments
    assert parent.info.status == "FINISHED" and parent.data.tags["labrun.trials"] == "2"


def test_optuna_search_records_trials_and_resumes(tmp_path: Path, store: str) -> None:
    env = labrun_env(tmp_path, store)
    # a time budget shorter than one trial: that trial finishes, no second one starts
    timed = ["hparams_search.n_trials=3", "hparams_search.timeout=0.5"]
    proc = run_labrun(["sweep", *SEARCH, *timed], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "hparams_search.timeout (0.5 s) reached after 1 trials" in proc.stderr
    client = MlflowClient(store)
    (parent,) = parents(client)
    assert parent.data.tags["labrun.sweep_kind"] == "optuna"
    first = children(client, parent.info.run_id)
    assert len(first) == 1
    # The same command without the time budget continues the study: two more trials.
    proc = run_labrun(["sweep", *SEARCH, "hparams_search.n_trials=3"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (parent,) = parents(client)
    kids = children(client, parent.info.run_id)
    assert len(kids) == 3
    assert sorted(int(k.data.tags["labrun.trial"]) for k in kids) == [0, 1, 2]
    assert parent.data.tags["labrun.trials"] == "3" and parent.info.status == "FINISHED"
    study = load_study(tmp_path)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    for kid in kids:  # the value Optuna holds is the run's metric
        trial = study.trials[int(kid.data.tags["labrun.trial"])]
        assert trial.value == kid.data.metrics["val/acc"]
        assert str(trial.params["model.hidden_size"]) == kid.data.params["model.hidden_size"]
    # the parent: every trial's objective (step = trial) and each parameter's importance
    history = client.get_metric_history(parent.info.run_id, "trials/val/acc")
    assert sorted((m.step, m.value) for m in history) == sorted(
        (int(k.data.tags["labrun.trial"]), k.data.metrics["val/acc"]) for k in kids
    )
    importance = json.loads(
        Path(
            client.download_artifacts(parent.info.run_id, "sweep/importance.json", str(tmp_path))
        ).read_text()
    )["importance"]
    assert set(importance) == set(study.trials[0].params)  # every searched parameter
    assert sum(importance.values()) == pytest.approx(1.0)
    import optuna

    expected = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)
    )
    assert importance == pytest.approx(dict(expected))  # what Optuna computes on the study
    for name, value in importance.items():
        assert parent.data.metrics[f"importance/{name}"] == pytest.approx(value)
    assert "hyperparameter importance for val/acc" in proc.stdout
    assert "sweep/importance.png" in artifact_paths(client, parent.info.run_id)
    shown = dashboard_trials(f"sqlite:///{tmp_path}/runs/optuna.db", "trec_lstm-optuna")
    assert sorted(shown) == sorted(t.value for t in study.trials)  # `make dashboard` shows them

    # trials 2 and 0 replayed from their recorded configs: nothing sampled again
    again = run_labrun(["rerun", parent.info.run_id, "--trials", "2,0"], env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [t.state.name for t in load_study(tmp_path).trials] == ["COMPLETE"] * 3
    (new_parent,) = [p for p in parents(client) if p.info.run_id != parent.info.run_id]
    reruns = children(client, new_parent.info.run_id)
    assert sorted(r.data.tags["labrun.trial"] for r in reruns) == ["0", "2"]
    by_trial = {k.data.tags["labrun.trial"]: k for k in kids}
    for r in reruns:
        original = by_trial[r.data.tags["labrun.trial"]]
        assert r.data.tags["labrun.rerun_of"] == original.info.run_id
        assert r.data.tags["labrun.verdict"] == "REPRODUCED"
        assert r.data.params["model.hidden_size"] == original.data.params["model.hidden_size"]
        assert r.data.params["model.optimizer.lr"] == original.data.params["model.optimizer.lr"]
    verdicts = json.loads(
        Path(
            client.download_artifacts(
                new_parent.info.run_id, "rerun/sweep_verdicts.json", str(tmp_path)
            )
        ).read_text()
    )
    assert [t["trial"] for t in verdicts["trials"]] == [2, 0]  # in the order asked
    assert verdicts["best_still_best"] is True and verdicts["counts"]["REPRODUCED"] == 2
    wrong = run_labrun(["rerun", parent.info.run_id, "--trials", "7"], env)
    assert wrong.returncode == 2 and "has no trial 7; its trials are 0, 1, 2" in wrong.stderr


def test_a_multi_objective_search_keeps_its_pareto_front(tmp_path: Path, store: str) -> None:
    """Accuracy up, parameters down: the parent holds the front Optuna found, each of its
    trials' values are its run's metrics, and no trial beats a front trial on both."""
    import optuna

    args = ["sweep", "experiment=trec_lstm", "hparams_search=trec_optuna_mo", *FAST]
    proc = run_labrun([*args, "hparams_search.n_trials=4"], labrun_env(tmp_path, store))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Pareto front: val/acc vs model/params" in proc.stdout
    client = MlflowClient(store)
    (parent,) = parents(client)
    stored = json.loads(
        Path(
            client.download_artifacts(parent.info.run_id, "sweep/pareto.json", str(tmp_path))
        ).read_text()
    )
    study = optuna.load_study(
        study_name="trec_lstm-optuna-mo", storage=f"sqlite:///{tmp_path}/runs/optuna.db"
    )
    assert [t["trial"] for t in stored["front"]] == sorted(t.number for t in study.best_trials)
    assert parent.data.tags["labrun.pareto_trials"] == ",".join(
        str(t["trial"]) for t in stored["front"]
    )
    runs = {k.data.tags["labrun.trial"]: k for k in children(client, parent.info.run_id)}
    assert len(runs) == 4
    for point in stored["front"]:
        run = runs[str(point["trial"])]
        assert run.info.run_id == point["run_id"]
        assert point["values"] == [run.data.metrics["val/acc"], run.data.metrics["model/params"]]
    for point in stored["front"]:  # dominated by none: better or equal on both, better on one
        acc, size = point["values"]
        for t in study.trials:
            better = t.values[0] >= acc and t.values[1] <= size
            assert not (better and (t.values[0] > acc or t.values[1] < size)), (t.number, point)
    assert "sweep/pareto.png" in artifact_paths(client, parent.info.run_id)


def test_a_failing_trial_is_recorded_and_the_study_goes_on(tmp_path: Path, store: str) -> None:
    """A user's search space, on Hydra's search path, one of whose values passes every config
    rule but names a data file that is not there: that trial fails when it reads its data, the
    others run, and the sweep ends with exit 1 naming the trial (its parent FAILED)."""
    space = tmp_path / "extra" / "hparams_search" / "with_a_bad_value.yaml"
    space.parent.mkdir(parents=True)
    space.write_text(  # the random sampler's seed 1 draws the second, second, first choice
        "study_name: trec_lstm-optuna\nstorage: null\nn_trials: 3\n"
        "sampler: {type: random, seed: 1}\npruner: {type: none}\n"
        "params:\n  data.files.train: {type: categorical, choices: "
        "[text/trec/nope.label, text/trec/train_5500.label]}\n"
    )
    env = labrun_env(tmp_path, store)
    search = [
        a if a != "hparams_search=trec_optuna" else "hparams_search=with_a_bad_value"
        for a in SEARCH
    ]
    proc = run_labrun(
        [
            "sweep",
            *search,
            "hparams_search.n_trials=3",
            f"hydra.searchpath=[file://{tmp_path}/extra]",
        ],
        env,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("labrun: error: sweep trec_lstm-optuna: trial 2: missing data file")
    assert "nope.label" in last
    study = load_study(tmp_path)
    states = [t.state.name for t in study.trials]
    assert len(states) == 3
    bad = [t for t in study.trials if t.params["data.files.train"].endswith("nope.label")]
    assert [t.number for t in bad] == [2] and bad[0].state.name == "FAIL"
    assert all(t.state.name == "COMPLETE" for t in study.trials if t not in bad)
    client = MlflowClient(store)
    (parent,) = parents(client)
    assert parent.info.status == "FAILED"
    assert "trial 2: missing data file" in parent.data.tags["labrun.error"]


def child_pid(parent: int, marker: str) -> int | None:
    """The pid of a child process of `parent` whose command line holds `marker`."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and marker in cmdline:
            return int(stat.parent.name)
    return None


SLOWER = "trainer.limit_train_batches=30"  # trials long enough to be caught training


def two_workers(tmp_path: Path, store: str, trials: int) -> tuple[subprocess.Popen, int, Any]:
    """`labrun sweep --workers 2` started: its process, worker 1's pid, and a client."""
    command = [str(labrun_command()), "sweep", *SEARCH, f"hparams_search.n_trials={trials}"]
    proc = subprocess.Popen(
        [*command, SLOWER, "--workers", "2"],
        env=labrun_env(tmp_path, store),
        cwd=ROOT,
        stdout=PIPE,
        stderr=PIPE,
        text=True,
    )
    worker = wait_for(lambda: child_pid(proc.pid, "--worker=1"), 180, "worker 1 to start")
    return proc, worker, MlflowClient(store)


def test_a_worker_that_dies_fails_the_sweep(tmp_path: Path, store: str) -> None:
    """SIGKILL worker 1 while it trains: the sweep ends, exits 1 naming the worker, its parent
    is FAILED, and the killed worker's trial is closed in Optuna and in MLflow."""
    proc, worker, client = two_workers(tmp_path, store, trials=5)

    def training() -> bool:
        runs = client.search_runs(
            [e.experiment_id for e in client.search_experiments()],
            f"tags.`labrun.pid` = '{worker}' and attributes.status = 'RUNNING'",
        )
        return bool(runs)

    wait_for(training, 240, "worker 1 to train a trial")
    os.kill(worker, signal.SIGKILL)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("labrun: error:") and "worker 1 exited with -9" in last, last
    (parent,) = parents(client)
    assert parent.info.status == "FAILED"
    assert "worker 1 exited with -9" in parent.data.tags["labrun.error"]
    kids = children(client, parent.info.run_id)
    killed = [k for k in kids if k.data.tags["labrun.pid"] == str(worker)]
    assert killed and all(k.info.status == "FAILED" for k in killed)  # none left RUNNING
    assert {k.info.status for k in kids} <= {"FINISHED", "FAILED"}
    study = load_study(tmp_path)
    assert "RUNNING" not in {t.state.name for t in study.trials}


def test_a_killed_search_stops_its_workers(tmp_path: Path, store: str) -> None:
    """`kill <pid>` of `labrun sweep --workers 2` while both workers train: worker 1 is
    stopped too, each trial's run ends KILLED, the parent FAILED, and the sweep exits 143 with
    its line; the same command then retries the stopped trials and finishes. Before,
    worker 1 trained on to n_trials and the parent stayed RUNNING."""
    import psutil

    # more trials than the test waits for: the stop always lands with both workers busy
    proc, worker, client = two_workers(tmp_path, store, trials=12)

    def both_training() -> bool:
        runs = client.search_runs(
            [e.experiment_id for e in client.search_experiments()],
            "attributes.status = 'RUNNING' and tags.`labrun.role` = 'trial'",
        )
        return {r.data.tags["labrun.pid"] for r in runs} == {str(proc.pid), str(worker)}

    try:
        wait_for(both_training, 240, "both workers to train a trial")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        (parent,) = parents(client)
        assert proc.returncode == 143, err[-3000:]
        reason = "the sweep stopped (signal 15); the same command continues it"
        assert err.strip().splitlines()[-1].endswith(f"{reason}; parent run {parent.info.run_id}")
        assert parent.info.status == "FAILED" and parent.data.tags["labrun.error"] == reason
        assert not psutil.pid_exists(worker)  # the sweep waited for it
        kids = children(client, parent.info.run_id)
        assert {k.data.tags["labrun.pid"] for k in kids if k.info.status == "KILLED"} == {
            str(proc.pid),
            str(worker),
        }
        assert "RUNNING" not in {k.info.status for k in kids}
        # The same command continues it: each stopped trial again, with its parameters.
        stopped = {t.number for t in load_study(tmp_path).trials if t.state.name == "RUNNING"}
        assert {int(k.data.tags["labrun.trial"]) for k in kids if k.info.status == "KILLED"} <= (
            stopped
        )
        total = len(load_study(tmp_path).trials) + len(stopped)
        again = run_labrun(
            ["sweep", *SEARCH, f"hparams_search.n_trials={total}", SLOWER],
            labrun_env(tmp_path, store),
        )
        assert again.returncode == 0, again.stderr[-3000:]
        (parent,) = parents(client)
        assert parent.info.status == "FINISHED" and "labrun.error" not in parent.data.tags
        assert parent.data.tags["labrun.resumed_after"] == reason  # the stop it went on from
        killed = [k for k in children(client, parent.info.run_id) if k.info.status == "KILLED"]
        assert len(killed) == 2 and all("labrun.superseded" in k.data.tags for k in killed)
        trials = load_study(tmp_path).trials
        assert {t.number for t in trials if t.state.name == "FAIL"} == stopped
        retries = [t for t in trials if "labrun.retry_of" in t.user_attrs]
        assert {t.user_attrs["labrun.retry_of"] for t in retries} == stopped
        assert {t.state.name for t in retries} == {"COMPLETE"}
    finally:  # a failure leaves no training behind
        for pid in (proc.pid, worker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def search_space(tmp_path: Path, name: str, text: str) -> list[str]:
    """A user's search space `name` on Hydra's search path; the sweep's overrides for it."""
    space = tmp_path / "extra" / "hparams_search" / f"{name}.yaml"
    space.parent.mkdir(parents=True, exist_ok=True)
    space.write_text(text)
    base = [a for a in SEARCH if not a.startswith("hparams_search")]  # the space says it all
    return [*base, f"hparams_search={name}", f"hydra.searchpath=[file://{tmp_path}/extra]"]


def test_the_median_pruner_stops_a_trial_that_trails(tmp_path: Path, store: str) -> None:
    """Trial 0 learns (lr 0.005), trial 1 cannot (lr 1e-9; the random sampler's seed 10 draws
    them in that order): after its first validation trial 1 trails the median and is pruned."""
    overrides = search_space(
        tmp_path,
        "prunable",
        "study_name: trec_lstm-optuna\nstorage: null\nn_trials: 2\n"
        "sampler: {type: random, seed: 10}\n"
        "pruner: {type: median, n_startup_trials: 1, n_warmup_steps: 0}\n"
        "params:\n  model.optimizer.lr: {type: categorical, choices: [0.005, 1.0e-9]}\n",
    )
    longer = ["trainer.max_epochs=3", "trainer.limit_train_batches=20"]
    proc = run_labrun(["sweep", *overrides, *longer], labrun_env(tmp_path, store))
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = load_study(tmp_path)
    first, second = study.trials
    assert first.params["model.optimizer.lr"] == 0.005 and first.state.name == "COMPLETE"
    assert second.params["model.optimizer.lr"] == 1e-9 and second.state.name == "PRUNED"
    assert max(second.intermediate_values) < 2  # stopped before its third epoch
    client = MlflowClient(store)
    (parent,) = parents(client)
    kids = {k.data.tags["labrun.trial"]: k for k in children(client, parent.info.run_id)}
    assert kids["1"].data.tags["labrun.trial_state"] == "PRUNED"
    assert kids["0"].data.tags["labrun.trial_state"] == "COMPLETE"


def test_a_nan_objective_is_a_failed_trial(tmp_path: Path, store: str) -> None:
    """Adam moves each weight by about lr a step: at 1e37, three steps take the head's
    512-wide sums past float32's largest value (3.4e38), inf - inf in the loss is NaN, and the
    trial counts as FAIL. (At 1e30 the loss stayed huge but finite on some CPUs.)"""
    overrides = search_space(
        tmp_path,
        "exploding",
        "study_name: trec_lstm-optuna\nstorage: null\nn_trials: 1\n"
        "sampler: {type: random, seed: 0}\npruner: {type: none}\n"
        "params:\n  model.optimizer.lr: {type: categorical, choices: [1.0e37]}\n",
    )
    objective = ["objective.metric=val/loss", "objective.direction=minimize"]
    proc = run_labrun(["sweep", *overrides, *objective], labrun_env(tmp_path, store))
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = load_study(tmp_path)
    assert [t.state.name for t in study.trials] == ["FAIL"]
    client = MlflowClient(store)
    (parent,) = parents(client)
    (kid,) = children(client, parent.info.run_id)
    assert math.isnan(kid.data.metrics["val/loss"])
    assert kid.data.tags["labrun.trial_state"] == "FAIL"


def test_a_trial_left_running_by_a_dead_process_is_retried(tmp_path: Path, store: str) -> None:
    """A crashed search run again: the trial its dead process left RUNNING is failed and
    retried with the same parameters, and the retry, not the crash, counts towards n_trials."""
    import optuna

    storage = f"sqlite:///{tmp_path}/runs/optuna.db"
    (tmp_path / "runs").mkdir()
    study = optuna.create_study(
        study_name="trec_lstm-optuna", storage=storage, direction="maximize"
    )
    dead = study.ask()  # a trial whose process died before telling its result
    lr = dead.suggest_float("model.optimizer.lr", 0.0003, 0.01, log=True)
    proc = run_labrun(["sweep", *SEARCH, "hparams_search.n_trials=1"], labrun_env(tmp_path, store))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trial 0 was left running by a process that died" in proc.stderr
    crashed, retry = load_study(tmp_path).trials
    assert (crashed.state.name, retry.state.name) == ("FAIL", "COMPLETE")
    assert retry.params["model.optimizer.lr"] == lr and retry.user_attrs["labrun.retry_of"] == 0
    (kid,) = children(MlflowClient(store), parents(MlflowClient(store))[0].info.run_id)
    assert float(kid.data.params["model.optimizer.lr"]) == lr


def test_a_launcher_that_fails_leaves_no_parent_running(tmp_path: Path, store: str) -> None:
    """A value only the launcher refuses (joblib's n_jobs=0) fails before any job: the parent,
    opened already, ends FAILED with the sweep's last line, not RUNNING forever."""
    proc = run_labrun(
        ["train", "-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=0", "seed=1,2", *FAST],
        labrun_env(tmp_path, store),
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "labrun: error: the sweep stopped before its jobs ended; its parent run "
    )
    (parent,) = parents(MlflowClient(store))
    assert parent.info.status == "FAILED"
    assert parent.data.tags["labrun.error"] == "the sweep stopped before its jobs ended"


def test_a_parallel_sweep_runs_jobs_in_processes_and_stops_them_when_killed(
    tmp_path: Path, store: str
) -> None:
    """Jobs 0-1 (2 epochs) run in two worker processes and finish. While jobs 2-3 (100 epochs)
    train, `kill <sweep pid>`, the sweep process alone and not its process group: it ends 143
    at once with its parent FAILED, and each running job, in its worker, ends KILLED at its
    next batch end. Jobs 4-5 never start and no worker lives on."""
    import psutil

    proc = subprocess.Popen(
        [
            labrun_command(),
            "train",
            "-m",
            "hydra/launcher=parallel",
            "trainer.max_epochs=2,100,100",
            "seed=1,2",
            *[o for o in FAST if not o.startswith("trainer.max_epochs")],
            "~callbacks.early_stopping",
            "trainer.log_every_n_steps=1",
        ],
        env=labrun_env(tmp_path, store),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=PIPE,
        text=True,
    )
    client = MlflowClient(store)

    def long_jobs_training() -> list:
        exp = client.get_experiment_by_name("trec_lstm") if Path(store[10:]).exists() else None
        runs = (
            client.search_runs([exp.experiment_id], "tags.`labrun.role` = 'trial'") if exp else []
        )
        long = [r for r in runs if r.data.params.get("trainer.max_epochs") == "100"]
        return runs if sum("train/loss_step" in r.data.metrics for r in long) == 2 else []

    workers: list = []
    try:
        wait_for(long_jobs_training, 300, "jobs 2-3 training")
        workers = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        (parent,) = parents(client)
        assert proc.returncode == 143, err[-3000:]
        assert (  # the workers write to the same stderr, after it
            "labrun: error: the sweep process got signal 15; its running jobs end KILLED; its "
            f"parent run {parent.info.run_id} is FAILED"
        ) in err.splitlines()
        assert parent.info.status == "FAILED"
        wait_for(lambda: not any(w.is_running() for w in workers), 120, "the workers to exit")
        runs = {int(r.data.tags["labrun.trial"]): r for r in children(client, parent.info.run_id)}
        assert {n: r.info.status for n, r in runs.items()} == {
            0: "FINISHED",
            1: "FINISHED",
            2: "KILLED",
            3: "KILLED",
        }
        assert len({runs[n].data.tags["labrun.pid"] for n in (0, 1)}) == 2  # two processes
        assert {runs[n].data.tags["labrun.signal"] for n in (2, 3)} == {"15"}
    finally:  # a failure leaves no training behind
        if proc.poll() is None:
            sweep = psutil.Process(proc.pid)
            workers += [*sweep.children(recursive=True), sweep]
        for leftover in workers:
            if leftover.is_running():
                leftover.kill()


def trials(client: MlflowClient) -> dict[int, list]:
    """Every attempt of every job of the store's one sweep, oldest first, by job number."""
    exp = client.get_experiment_by_name("trec_lstm")
    found: dict[int, list] = {}
    if exp is None:
        return found
    runs = client.search_runs(
        [exp.experiment_id], "tags.`labrun.role` = 'trial'", order_by=["attributes.start_time"]
    )
    for run in runs:
        found.setdefault(int(run.data.tags["labrun.trial"]), []).append(run)
    return found


def test_a_killed_grid_sweep_continues_where_it_stopped(tmp_path: Path, store: str) -> None:
    """The sweep's process is killed (SIGKILL: nothing closes anything) while its second job
    trains. The same command again continues the same sweep and parent: the finished trial is
    kept (not trained again), the killed one trains again and its dead attempt is closed KILLED
    and set aside. Code that changed since the sweep started is refused in one line, unless
    --allow-drift, which the parent records."""
    env = labrun_env(tmp_path, store)
    argv = ["train", "-m", "experiment=trec_lstm", "seed=1,2", *FAST]
    with (tmp_path / "sweep.out").open("w") as out:
        sweep = subprocess.Popen(
            [str(labrun_command()), *argv],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    client = MlflowClient(store)

    def second_job_training() -> bool:
        found = trials(client) if Path(store.removeprefix("sqlite:///")).exists() else {}
        return bool(found.get(1)) and found[0][0].info.status == "FINISHED"

    try:
        wait_for(second_job_training, 240, "the sweep's second job to start")
    finally:
        os.killpg(sweep.pid, signal.SIGKILL)
        sweep.wait()
    (parent,) = parents(client)
    assert parent.info.status == "RUNNING"
    sweep_id = parent.data.tags["labrun.sweep_id"]
    seen = run_labrun(["sweep", "status", sweep_id, "--json"], env)
    assert seen.returncode == 0, seen.stderr[-2000:]
    assert json.loads(seen.stdout)["counts"] == {
        "queued": 0,
        "running": 1,  # the killed job's run: its process is gone, it is still RUNNING
        "finished": 1,
        "failed": 0,
    }
    before = trials(client)
    kept_id, kept_metrics = before[0][0].info.run_id, before[0][0].data.metrics

    # the sweep as if started from other code: continuing it is refused, nothing trains
    client.set_tag(parent.info.run_id, "labrun.sweep_code", "0" * 16)
    refused = run_labrun(argv, env)
    assert refused.returncode == 2, refused.stderr[-2000:]
    line = refused.stderr.strip().splitlines()[-1]
    assert (
        line.startswith("labrun: error: the code changed since sweep") and "--allow-drift" in line
    )
    assert sum(len(v) for v in trials(client).values()) == 2

    done = run_labrun([*argv, "--allow-drift"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    (again,) = parents(client)
    assert again.info.run_id == parent.info.run_id and again.info.status == "FINISHED"
    assert again.data.tags["labrun.sweep_drift"].startswith("the code changed since sweep")
    after = trials(client)
    assert [r.info.run_id for r in after[0]] == [kept_id]  # kept, not trained again
    assert after[0][0].data.metrics == kept_metrics
    dead, retrained = after[1]
    assert dead.info.status == "KILLED" and "labrun.superseded" in dead.data.tags
    assert retrained.info.status == "FINISHED" and "labrun.superseded" not in retrained.data.tags
    summary = json.loads(
        Path(
            client.download_artifacts(parent.info.run_id, "sweep/summary.json", str(tmp_path))
        ).read_text()
    )
    assert (summary["trials"], summary["failed"]) == (2, 0)
    assert {r["run_id"] for r in summary["table"]} == {kept_id, retrained.info.run_id}
    listed = run_labrun(["sweeps", "--json"], env)
    assert listed.returncode == 0, listed.stderr[-2000:]
    (row,) = json.loads(listed.stdout)
    assert (row["sweep_id"], row["kind"], row["status"]) == (sweep_id, "multirun", "FINISHED")
    assert row["counts"] == {"queued": 0, "running": 0, "finished": 2, "failed": 0}


def test_compare_groups_a_model_sweep_by_the_choice_names(tmp_path: Path, store: str) -> None:
    """`labrun train -m model=lstm_classifier,kim_cnn seed=1,2`, then `labrun compare --sweep
    ID --group-by model`: each run records its config groups' choices, and the pooled table
    names the architectures as they were chosen, two seeds each."""
    grid = ["model=lstm_classifier,kim_cnn", "seed=1,2", "model.embedding_dim=32"]
    proc = run_labrun(["train", "-m", *grid, *FAST], labrun_env(tmp_path, store))
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(store)
    (parent,) = parents(client)
    kids = children(client, parent.info.run_id)
    assert sorted(k.data.tags["labrun.choice.model"] for k in kids) == [
        "kim_cnn",
        "kim_cnn",
        "lstm_classifier",
        "lstm_classifier",
    ]
    assert {k.data.tags["labrun.choice.data"] for k in kids} == {"trec"}
    assert {k.data.tags["labrun.choice.model/optimizer"] for k in kids} == {"adam"}
    sweep_id = parent.data.tags["labrun.sweep_id"]
    args = ["compare", "--sweep", sweep_id, "--group-by", "model", "--format", "csv"]
    table = run_labrun([*args, "--metric", "test/acc"], labrun_env(tmp_path, store))
    assert table.returncode == 0, table.stderr[-3000:]
    lines = table.stdout.splitlines()
    assert any(line.startswith("model,n,mean,std") for line in lines), table.stdout
    pooled = {line.split(",")[0]: line.split(",")[1] for line in lines if "," in line}
    assert pooled["lstm_classifier"] == "2" and pooled["kim_cnn"] == "2", table.stdout
    typo = run_labrun([*args[:3], "--group-by", "modle"], labrun_env(tmp_path, store))
    assert typo.returncode == 2
    assert (
        typo.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "--group-by modle: no selected run has that param or config group; "
            "use a param (model.hidden_size) or a group (model, data, model/optimizer)"
        )
    ), typo.stderr
