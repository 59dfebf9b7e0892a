"""Grids (Hydra multirun), Optuna searches and `labrun compare` against a real MLflow store."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from labrun.compare import compare, group_stats, parse
from labrun.errors import LabrunError
from tests.conftest import labrun_env, run_labrun

FAST = [
    "trainer.max_epochs=2",
    "+trainer.limit_train_batches=3",
    "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=2",
    "~callbacks.progress_bar",
    "tracking.log_model=false",
]


def children(client: MlflowClient, parent_id: str) -> list:
    parent = client.get_run(parent_id)
    return client.search_runs(
        [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )


def parents(client: MlflowClient, experiment: str = "trec_lstm") -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], "tags.`labrun.role` = 'parent'")


def test_grid_is_one_parent_with_a_child_per_job(tmp_path: Path, store: str) -> None:
    proc = run_labrun(
        ["train", "-m", "model.hidden_size=16,32", "seed=1,2", *FAST], labrun_env(tmp_path, store)
    )
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
    best = max(kids, key=lambda k: k.data.metrics["val/acc"])
    assert parent.data.tags["labrun.best_run"] == best.info.run_id
    assert parent.data.metrics["best/val/acc"] == best.data.metrics["val/acc"]


def test_a_failed_job_loses_nothing_else(tmp_path: Path, store: str) -> None:
    """hidden_size=0 makes the LSTM raise; the other job still finishes and is counted."""
    proc = run_labrun(["train", "-m", "model.hidden_size=16,0", *FAST], labrun_env(tmp_path, store))
    assert proc.returncode == 1
    assert "had failed trials" in proc.stderr.strip().splitlines()[-1]
    client = MlflowClient(store)
    (parent,) = parents(client)
    assert parent.info.status == "FAILED" and parent.data.tags["labrun.failed_trials"] == "1"
    kids = {k.data.params["model.hidden_size"]: k for k in children(client, parent.info.run_id)}
    assert kids["16"].info.status == "FINISHED" and "test/acc" in kids["16"].data.metrics
    assert kids["0"].info.status == "FAILED"


def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path: Path, store: str) -> None:
    proc = run_labrun(
        [
            "train",
            "-m",
            "model.hidden_size=16,32",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            *FAST,
        ],
        labrun_env(tmp_path, store),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(store)
    (parent,) = parents(client)
    kids = children(client, parent.info.run_id)
    assert len(kids) == 2 and {k.info.status for k in kids} == {"FINISHED"}
    a, b = (k.info for k in kids)
    assert a.start_time < b.end_time and b.start_time < a.end_time  # they overlapped


SEARCH = [
    "experiment=trec_lstm",
    "hparams_search=trec_optuna",
    *FAST,
    "hparams_search.pruner.type=none",
]


def test_optuna_search_records_trials_and_resumes(tmp_path: Path, store: str) -> None:
    env = labrun_env(tmp_path, store)
    proc = run_labrun(["sweep", *SEARCH, "hparams_search.n_trials=2"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(store)
    (parent,) = parents(client)
    assert parent.data.tags["labrun.sweep_kind"] == "optuna"
    first = children(client, parent.info.run_id)
    assert len(first) == 2
    # The same command with a larger budget continues the study: one more trial, not three.
    proc = run_labrun(["sweep", *SEARCH, "hparams_search.n_trials=3"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (parent,) = parents(client)
    kids = children(client, parent.info.run_id)
    assert len(kids) == 3
    assert sorted(int(k.data.tags["labrun.trial"]) for k in kids) == [0, 1, 2]
    assert parent.data.tags["labrun.trials"] == "3" and parent.info.status == "FINISHED"
    import optuna

    study = optuna.load_study(
        study_name="trec_lstm-optuna", storage=f"sqlite:///{tmp_path}/runs/optuna.db"
    )
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3
    for kid in kids:  # the value Optuna holds is the run's metric
        trial = study.trials[int(kid.data.tags["labrun.trial"])]
        assert trial.value == kid.data.metrics["val/acc"]
        assert str(trial.params["model.hidden_size"]) == kid.data.params["model.hidden_size"]


def test_a_failing_trial_is_recorded_and_the_study_goes_on(tmp_path: Path, store: str) -> None:
    """A user's search space, on Hydra's search path, where hidden_size=0 makes the LSTM raise."""
    space = tmp_path / "extra" / "hparams_search" / "with_a_bad_value.yaml"
    space.parent.mkdir(parents=True)
    space.write_text(  # the random sampler's seed 1 draws 16, 16, 0
        "study_name: trec_lstm-optuna\nstorage: null\nn_trials: 3\n"
        "sampler: {type: random, seed: 1}\npruner: {type: none}\n"
        "params:\n  model.hidden_size: {type: categorical, choices: [0, 16]}\n"
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
    assert proc.returncode == 0, proc.stderr[-3000:]
    import optuna

    study = optuna.load_study(
        study_name="trec_lstm-optuna", storage=f"sqlite:///{tmp_path}/runs/optuna.db"
    )
    states = [t.state.name for t in study.trials]
    assert len(states) == 3
    zero = [t for t in study.trials if t.params.get("model.hidden_size") == 0]
    assert zero and all(t.state.name == "FAIL" for t in zero)
    assert all(t.state.name == "COMPLETE" for t in study.trials if t not in zero)


def test_two_workers_share_one_study(tmp_path: Path, store: str) -> None:
    env = labrun_env(tmp_path, store)
    start = time.time()
    proc = run_labrun(["sweep", *SEARCH, "hparams_search.n_trials=4", "--workers", "2"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.time() - start < 300
    client = MlflowClient(store)
    (parent,) = parents(client)
    kids = children(client, parent.info.run_id)
    assert 4 <= len(kids) <= 5  # two workers may each start the last trial at once
    assert len({k.data.tags["labrun.trial"] for k in kids}) == len(kids)
    # Each worker samples with its own seed: no two trials try the same learning rate.
    assert len({k.data.params["model.optimizer.lr"] for k in kids}) == len(kids)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["experiment=trec_lstm"], "labrun sweep needs a search space"),
        (["experiment=nope", "hparams_search=trec_optuna"], "Could not find 'experiment/nope'"),
        (
            ["hparams_search=trec_optuna", "model.hiden_size=3"],
            "unknown config key 'model.hiden_size'",
        ),
    ],
)
def test_sweep_bad_input_is_one_line(
    args: list[str], message: str, tmp_path: Path, store: str
) -> None:
    proc = run_labrun(["sweep", *args], labrun_env(tmp_path, store))
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("labrun: error:") and message in last, last


# -- compare, on runs whose metrics we set ----------------------------------------------------

KNOWN = {  # hidden_size -> test/acc per seed
    "64": [0.80, 0.82, 0.81],
    "128": [0.85, 0.86, 0.88],
}


@pytest.fixture
def known_store(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path}/known.db"
    client = MlflowClient(uri)
    exp = client.create_experiment("known", artifact_location=(tmp_path / "art").as_uri())
    for hidden, accs in KNOWN.items():
        for seed, acc in enumerate(accs):
            run = client.create_run(
                exp,
                run_name=f"h{hidden}-s{seed}",
                tags={"labrun.sweep_id": "known-sweep", "labrun.seed": str(seed)},
            )
            client.log_batch(
                run.info.run_id,
                params=[
                    mlflow.entities.Param("model.hidden_size", hidden),
                    mlflow.entities.Param("seed", str(seed)),
                    mlflow.entities.Param("model.dropout", "0.5"),
                ],
            )
            for step, value in enumerate([acc - 0.1, acc - 0.05, acc]):
                client.log_metric(run.info.run_id, "val/acc", value, step=step)
            client.log_metric(run.info.run_id, "test/acc", acc)
            client.set_terminated(run.info.run_id)
    return uri


def test_group_stats_match_a_hand_computation(known_store: str) -> None:
    client = MlflowClient(known_store)
    runs = client.search_runs([client.get_experiment_by_name("known").experiment_id])
    groups = {
        g["model.hidden_size"]: g for g in group_stats(runs, ["model.hidden_size"], "test/acc")
    }
    for hidden, accs in KNOWN.items():
        g = groups[hidden]
        mean = sum(accs) / 3
        sd = math.sqrt(sum((a - mean) ** 2 for a in accs) / 2)
        half = stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
        assert g["n"] == 3
        assert g["mean"] == pytest.approx(mean)
        assert g["std"] == pytest.approx(sd)
        assert (g["ci_low"], g["ci_high"]) == pytest.approx((mean - half, mean + half))
    p = stats.ttest_ind(KNOWN["64"], KNOWN["128"], equal_var=False).pvalue
    assert groups["64"]["p_vs_best"] == pytest.approx(p)
    assert math.isnan(groups["128"]["p_vs_best"])  # the best group itself


def test_compare_reports_in_every_format(known_store: str, tmp_path: Path, capsys) -> None:
    base = [
        "--tracking-uri",
        known_store,
        "--sweep",
        "known-sweep",
        "--group-by",
        "model.hidden_size",
    ]
    text = compare(parse([*base, "--format", "csv"]))
    assert "model.hidden_size,n,mean,std,ci_low,ci_high,p_vs_best" in text
    assert "model.dropout" not in text  # the same in every run: not a difference
    md = compare(parse([*base, "--format", "md"]))
    assert "| model.hidden_size | n | mean |" in md and "Welch" in md
    out = tmp_path / "report"
    compare(
        parse(
            [
                *base,
                "--format",
                "html",
                "--plot",
                "curves",
                "--plot",
                "parallel",
                "--plot",
                "scatter",
                "-o",
                str(out),
            ]
        )
    )
    page = (out / "compare.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    assert (out / "curves.png").stat().st_size > 1000
    compare(parse([*base]))
    assert "test/acc by model.hidden_size" in capsys.readouterr().out


def test_compare_two_runs_shows_config_metric_and_provenance_diffs(known_store: str) -> None:
    client = MlflowClient(known_store)
    runs = client.search_runs(
        [client.get_experiment_by_name("known").experiment_id],
        order_by=["attributes.start_time ASC"],
    )
    a, b = runs[0], runs[-1]
    text = compare(
        parse(["--tracking-uri", known_store, a.info.run_id, b.info.run_id, "--format", "csv"])
    )
    assert "model.hidden_size,64,128" in text
    assert "test/acc,0.8,0.88,0.08" in text
    assert "labrun.seed,0,2" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["0123456789abcdef0123456789abcdef"], "no run '0123456789abcdef0123456789abcdef'"),
        (["--experiment", "known", "--tag", "nothing=here"], "no runs match the selection"),
        (["--experiment", "known", "--metric", "test/f1"], "metric test/f1 was never logged"),
        (["--experiment", "nope"], "no experiment 'nope'"),
    ],
)
def test_compare_bad_input(args: list[str], message: str, known_store: str, tmp_path: Path) -> None:
    with pytest.raises(LabrunError, match=message):
        compare(parse(["--tracking-uri", known_store, *args]))
    proc = run_labrun(["compare", "--tracking-uri", known_store, *args], labrun_env(tmp_path))
    assert proc.returncode == 2 and message in proc.stderr
