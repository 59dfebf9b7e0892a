"""Reruns on "another machine": statistical verdicts over seeds, and the first step where two
runs part, against real runs in a real store.

`ATEN_CPU_CAPABILITY=default` makes torch use its generic CPU kernels instead of AVX2/AVX512:
the last bits of a training run change as they would on another CPU.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from labrun.job.train import train
from labrun.rerun import verdict as rerun_verdict
from labrun.tracking.trajectory import ARTIFACT
from tests.helpers import TINY, do_rerun, labrun_env, run_labrun

QUICK = [
    *(o for o in TINY if not o.startswith("+trainer.limit_train_batches")),
    "+trainer.limit_train_batches=6",
    "tracking.log_model=false",
    # Whether another kernel or thread count changes a run's last bits depends on the shapes;
    # these tests' drifts were found with batches of 50 (the recipe's 25 gives runs that the
    # generic kernels and 2 threads leave bit-identical), so the shape is pinned here.
    "data.batch_size=50",
]


def trained(make_cfg, *overrides: str) -> str:
    return str(train(make_cfg(*QUICK, *overrides))["run_id"])


def stored(client: MlflowClient, run_id: str, path: str, tmp: Path) -> dict:
    return json.loads(Path(client.download_artifacts(run_id, path, str(tmp))).read_text())


def test_prediction_interval_against_a_hand_computation() -> None:
    values = [0.90, 0.91, 0.93, 0.94]
    n, mean = 4, 0.92
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    spread = std * math.sqrt(1 + 1 / n)
    half = stats.t.ppf(0.975, n - 1) * spread
    got = rerun_verdict.prediction(0.96, values)
    assert got["mean"] == pytest.approx(mean) and got["std"] == pytest.approx(std)
    assert got["low"] == pytest.approx(mean - half) and got["high"] == pytest.approx(mean + half)
    assert got["p"] == pytest.approx(2 * stats.t.sf((0.96 - mean) / spread, n - 1))
    assert got["inside"] is bool(mean + half >= 0.96) is True
    assert rerun_verdict.prediction(0.99, values)["inside"] is False
    assert rerun_verdict.prediction(0.5, [0.5, 0.5])["p"] == 1.0  # no spread: equal or not
    assert rerun_verdict.prediction(0.6, [0.5, 0.5])["inside"] is False
    outcome, rows = rerun_verdict.statistical(
        {"val/acc": 0.99, "test/acc": 0.92},
        [{"val/acc": v, "test/acc": v} for v in values],
        "test/acc",
    )
    assert outcome == "CONSISTENT"  # the objective decides; val/acc is out but only shown
    assert [r["metric"] for r in rows if r["decides"]] == ["test/acc"]


def test_a_rerun_on_another_cpu_is_consistent_with_its_seeds(
    make_cfg, store: str, tmp_path: Path
) -> None:
    """Generic kernels instead of the recorded AVX ones: not identical, so the original is
    tested against 3 seeds here (its own, a stored sibling's, one new), and the verdict says
    which drift ruled exactness out and where the runs first part."""
    # a run whose last bits the generic kernels change: in 6 batches the lower-cased data's
    # do; the recipe's cased TREC happens to come out bit-identical on both kernels (tried:
    # the rerun is then rightly REPRODUCED, which is not what this test is about)
    original = trained(make_cfg, "data.lowercase=true")
    sibling = trained(make_cfg, "seed=43", "data.lowercase=true")
    client = MlflowClient(store)
    env = labrun_env(tmp_path, store, ATEN_CPU_CAPABILITY="default")
    done = run_labrun(["rerun", original, "--seeds", "3"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "CONSISTENT" in done.stdout and "prediction interval" in done.stdout
    (rerun,) = client.search_runs(
        [client.get_run(original).info.experiment_id], f"tags.`labrun.rerun_of` = '{original}'"
    )
    tags = rerun.data.tags
    assert tags["labrun.verdict"] == "CONSISTENT"
    assert tags["labrun.verdict_rule"].startswith("not exact: cpu capability ")
    assert (
        "-> DEFAULT" in tags["labrun.verdict_rule"]
        and "statistical over 3 seeds" in tags["labrun.verdict_rule"]
    )
    record = stored(client, rerun.info.run_id, "rerun/verdict.json", tmp_path / "v")
    assert [(s["seed"], s["source"]) for s in record["seeds"]] == [
        (42, "rerun"),
        (43, "stored"),
        (44, "new"),
    ]
    assert record["seeds"][1]["run_id"] == sibling
    deciding = [t for t in record["tested"] if t["decides"]]
    assert [t["metric"] for t in deciding] == ["val/acc"] and deciding[0]["inside"]
    assert deciding[0]["n"] == 3 and deciding[0]["low"] <= deciding[0]["original"]
    divergence = record["explain"]["divergence"]
    assert divergence is not None  # the kernels changed the numbers somewhere
    assert any("cpu capability" in s for s in record["explain"]["suspects"])
    assert "trajectories part" in done.stdout
    new_seed = client.get_run(record["seeds"][2]["run_id"])
    assert new_seed.data.tags["labrun.rerun_seed_of"] == original
    assert new_seed.data.params["seed"] == "44"


def test_a_result_outside_its_seeds_differs(make_cfg, store: str, here: Path, tmp_path) -> None:
    """The original's recorded accuracy changed to one this config never gives: where
    exactness was expected the verdict is DIFFERS at once (and says --seeds tests it); with
    --seeds it is DIFFERS on the evidence, with the interval and the p-value."""
    original = trained(make_cfg)
    client = MlflowClient(store)
    final = stored(client, original, "metrics/final.json", tmp_path / "f")
    final["val/acc"] = 0.999
    client.log_dict(original, final, "metrics/final.json")

    exact = do_rerun(store, original)
    assert exact["verdict"] == "DIFFERS" and "--seeds N tests" in exact["rule"]
    assert exact["rule"].startswith("exact:") and exact["tested"] == []

    tested = do_rerun(store, original, "--seeds", "3")
    assert tested["verdict"] == "DIFFERS"
    (row,) = [t for t in tested["tested"] if t["metric"] == "val/acc"]
    assert row["decides"] and not row["inside"] and row["high"] < 0.999 and row["p"] < 0.05
    assert tested["explain"]["divergence"] is None  # the training itself was exact


def fingerprint(client: MlflowClient, run_id: str, tmp: Path) -> dict:
    return stored(client, run_id, ARTIFACT, tmp)


def test_explain_names_the_first_step_where_runs_part(
    make_cfg, store: str, here: Path, tmp_path: Path
) -> None:
    """Drifts caused on purpose: another batch order parts at step 0's batch; another thread
    count parts later in the update (its forward agrees); an exact rerun never parts."""
    original = trained(make_cfg)
    client = MlflowClient(store)
    same = do_rerun(store, original, "--explain")
    assert same["verdict"] == "REPRODUCED"
    assert same["explain"]["divergence"] is None
    assert "identical at every step" in same["explain"]["text"]

    order = do_rerun(store, original, "data.shuffle_seed=7", "--explain")
    found = order["explain"]["divergence"]
    assert (found["step"], found["place"], found["what"]) == (0, "batch", "batch")
    assert order["explain"]["suspects"][0] == "override data.shuffle_seed=7"

    threads = do_rerun(store, original, "threads=2", "--explain")
    found = threads["explain"]["divergence"]
    assert found is not None and found["what"] != "batch" and found["place"] != "init"
    a = fingerprint(client, original, tmp_path / "a")
    b = fingerprint(client, threads["run_id"], tmp_path / "b")
    assert a["batch"] == b["batch"]  # same data order
    step = found["step"]
    assert a["loss"][:step] == b["loss"][:step] and a["grad_norm"][:step] == b["grad_norm"][:step]
    assert a["steps"] == 6 and len(a["loss"]) == len(a["grad_norm"]) == len(a["batch"]) == 6
    assert set(a["params"]) == {"init", "0"}  # every 50 steps, and before the first
