"""The benchmark's baseline is only fair if it does the same work: same losses, batch by batch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import FAST, ROOT, labrun_env


def worker(name: str, tmp_path) -> dict:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "worker", name, "--epochs", "1"],
        capture_output=True,
        text=True,
        env=labrun_env(tmp_path),
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_plain_loop_and_labrun_train_on_the_same_losses(tmp_path) -> None:
    """trec_lstm here; `make bench` checks the GAN the same way (it needs the feature net)."""
    plain = worker("plain_trec", tmp_path)
    ours = worker("labrun_trec_default", tmp_path)
    assert len(plain["losses"]) == len(ours["losses"]) > 50
    worst = max(abs(a - b) for a, b in zip(plain["losses"], ours["losses"], strict=True))
    assert worst < 5e-6  # Lightning's own parity test asks for 5 decimals
    assert len(plain["epoch_s"]) == len(ours["epoch_s"]) == 1


def test_the_gpu_benchmark_reads_what_a_run_recorded(tmp_path, monkeypatch) -> None:
    """`make bench BENCH_ARGS=--gpu` runs on a GPU machine only; its runner and its table are
    checked here on the CPU row, two epochs of a real `labrun train`."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_gpu

    for key, value in labrun_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    extra = ["trainer.max_epochs=2", *(o for o in FAST if o.startswith("+trainer.limit"))]
    out = tmp_path / "gpu.json"
    bench_gpu.main(["--out", str(out), "--only", "trec cpu", "--extra", *extra])
    run = json.loads(out.read_text())["runs"]["trec cpu"]
    assert run["exit"] == 0, run
    assert run["epochs"] == 2 and 0 < run["run_s"] < run["wall_s"]
    assert 0 <= run["metrics"]["test/acc"] <= 1 and run["device"] == "cpu"
    monkeypatch.setattr(bench_gpu, "RESULTS", out)
    table = "\n".join(bench_gpu.section())
    assert f"| trec cpu | 0 | {run['run_s']:.1f} | 2 |" in table


def test_the_quality_table_is_labrun_compare_over_three_seeds(tmp_path, monkeypatch) -> None:
    """`make bench BENCH_ARGS=--quality`: a real `labrun train -m ... seed=1,2,3`, pooled by a
    real `labrun compare --group-by`; the table's means are the runs' own test accuracies."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_quality
    from mlflow.tracking import MlflowClient

    env = labrun_env(tmp_path)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(
        bench_quality, "SWEEPS", {"text": (["experiment=trec_lstm,trec_cnn"], ["test/acc"])}
    )
    tiny = ["trainer.max_epochs=1", *(o for o in FAST if o.startswith("+trainer.limit"))]
    out = tmp_path / "quality.json"
    run_dir = tmp_path / "quality-runs"
    sweep = bench_quality.main(extra=tiny, out=out, run_dir=str(run_dir))["text"]
    assert set(sweep["groups"]) == {"trec_lstm", "trec_cnn"}
    client = MlflowClient(f"sqlite:///{run_dir}/mlflow.db")
    for group, stats in sweep["groups"].items():
        runs = client.search_runs([client.get_experiment_by_name(group).experiment_id])
        accs = [r.data.metrics["test/acc"] for r in runs if "test/acc" in r.data.metrics]
        assert len(accs) == stats["test/acc"]["n"] == 3
        # compare --format csv writes four decimals
        assert stats["test/acc"]["mean"] == pytest.approx(sum(accs) / 3, abs=5e-5)
        assert sweep["minutes_per_run"][group] > 0
    table = "\n".join(bench_quality.section(out))
    # which CPU measured it: the one each run recorded, named beside the sweep's command
    recorded = client.download_artifacts(runs[0].info.run_id, "provenance/provenance.json")
    cpu = json.loads(Path(recorded).read_text())["cpu"]
    assert sweep["machine"].startswith(f"{cpu}, ") and f"; {sweep['machine']})" in table
    mean = sweep["groups"]["trec_cnn"]["test/acc"]["mean"]
    assert f"| trec_cnn | {100 * mean:.1f} ± " in table and "91.2 (Kim 2014 CNN-rand)" in table
