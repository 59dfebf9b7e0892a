"""`make bench BENCH_ARGS=--gpu` (on a machine with a CUDA GPU): the GPU trainer configs
(`trainer=gpu`, `gpu_bf16`, `ddp`, `fsdp`) on the default recipes, beside `trainer=cpu` on the
same machine; whether two GPU runs of one config give bit-identical metrics.

Every run is `labrun train` as a user runs it, in a fresh run folder and store; its seconds are
the MLflow run's own (start to end: imports and composing not counted). Writes
benchmarks/gpu.json after every run (a cut-short session keeps what it measured); `section()`
renders it into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("gpu.json")
QUIET = ["~callbacks.progress_bar"]
# name -> overrides. On a one-GPU machine `ddp` and `fsdp` run on one device: the strategy's
# code path (process group, sharded state, checkpoints), not a speed-up.
RUNS: dict[str, list[str]] = {
    "trec gpu": ["experiment=trec_lstm", "trainer=gpu"],
    "trec gpu again": ["experiment=trec_lstm", "trainer=gpu"],
    "trec gpu_bf16": ["experiment=trec_lstm", "trainer=gpu_bf16"],
    "trec ddp (1 GPU)": ["experiment=trec_lstm", "trainer=ddp", "trainer.devices=1"],
    "trec fsdp (1 GPU)": ["experiment=trec_lstm", "trainer=fsdp", "trainer.devices=1"],
    "mnist_dcgan gpu": ["experiment=mnist_dcgan", "trainer=gpu"],
    "trec cpu": ["experiment=trec_lstm", "trainer=cpu"],
    "mnist_dcgan gpu_bf16": ["experiment=mnist_dcgan", "trainer=gpu_bf16"],
}
SHOWN = ("test/acc", "test/f1", "test/fid", "test/kid_mean", "test/coverage_kl")


def machine() -> dict[str, str]:
    import importlib.metadata as metadata

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    names = ("torch", "lightning", "torchmetrics", "mlflow")
    return {
        "gpu": gpu,
        "cuda": str(torch.version.cuda),
        "cudnn": str(torch.backends.cudnn.version()),
        "cpus": str(os.cpu_count()),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "packages": ", ".join(f"{n} {metadata.version(n)}" for n in names),
    }


def one_run(overrides: list[str], timeout: float) -> dict[str, Any]:
    """`labrun train OVERRIDES` in a fresh store: exit code, wall, the run's seconds, epochs,
    final metrics (or the error's last line)."""
    from mlflow.tracking import MlflowClient

    home = tempfile.mkdtemp(prefix="labrun-gpu-")
    env = {**os.environ, "LABRUN_RUN_DIR": home}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "labrun", "train", *overrides, *QUIET],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        code, err = done.returncode, done.stderr
    except subprocess.TimeoutExpired:
        code, err = -1, f"timed out after {timeout:.0f} s"
    out: dict[str, Any] = {"exit": code, "wall_s": time.perf_counter() - start}
    if code != 0:
        lines = [line for line in err.splitlines() if line.strip()]
        out["error"] = next((ln for ln in lines if ln.startswith("labrun: error")), lines[-1:])
        return out
    client = MlflowClient(f"sqlite:///{home}/mlflow.db")
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], order_by=["start_time DESC"]
    )
    run = runs[0]
    val = sorted(k for k in run.data.metrics if k.startswith("val/"))
    epochs = len(client.get_metric_history(run.info.run_id, val[0])) if val else 0
    out.update(
        run_s=(run.info.end_time - run.info.start_time) / 1000,
        epochs=epochs,
        metrics=dict(run.data.metrics),
        device=run.data.tags.get("labrun.device", ""),
    )
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--budget", type=float, default=1800.0, help="seconds for all runs")
    p.add_argument("--only", nargs="*", default=list(RUNS), help="names from RUNS")
    p.add_argument("--extra", nargs="*", default=[], help="overrides added to every run")
    args = p.parse_args(argv)
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "runs": {},
    }
    deadline = time.time() + args.budget
    for name in args.only:
        left = deadline - time.time()
        if left < 30:
            results["runs"][name] = {"exit": None, "error": "not run: the budget was spent"}
            continue
        results["runs"][name] = one_run([*RUNS[name], *args.extra], left)
        print(name, json.dumps(results["runs"][name])[:400], flush=True)
        same = [
            {k: v for k, v in results["runs"].get(n, {}).get("metrics", {}).items()
             if not k.startswith("system/")}  # the machine's load, sampled while training
            for n in ("trec gpu", "trec gpu again")
        ]  # fmt: skip
        if all(same):
            results["gpu_bit_identical"] = same[0] == same[1]
        args.out.write_text(json.dumps(results, indent=2))


def section() -> list[str]:
    """BENCHMARKS.md's GPU section, from the last benchmarks/gpu.json."""
    if not RESULTS.is_file():
        return []
    r = json.loads(RESULTS.read_text())
    m = r["machine"]
    lines = [
        "",
        "## GPU trainer configs",
        "",
        f"Measured {r['when']} (`make bench BENCH_ARGS=--gpu`) on one {m['gpu']} (CUDA "
        f"{m['cuda']}, cuDNN {m['cudnn']}, {m['cpus']} CPU cores, {m['cpu_capability']}; "
        f"{m['packages']}). Each row is `labrun train experiment=... trainer=...` in a fresh "
        "store; seconds are the MLflow run's own (imports and composing not counted). `ddp` "
        "and `fsdp` ran on one device there: their code path, not a speed-up.",
        "",
        "| run | exit | run s | epochs | s / epoch | result |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, run in r["runs"].items():
        if run.get("exit") != 0:
            lines.append(f"| {name} | {run.get('exit')} | | | | {run.get('error', '')} |")
            continue
        shown = ", ".join(f"{k} {v:.4f}" for k, v in run["metrics"].items() if k in SHOWN)
        per = run["run_s"] / max(run["epochs"], 1)
        lines.append(f"| {name} | 0 | {run['run_s']:.1f} | {run['epochs']} | {per:.2f} | {shown} |")
    if "gpu_bit_identical" in r:
        said = "bit-identical" if r["gpu_bit_identical"] else "NOT bit-identical"
        lines += ["", f"Two `trainer=gpu` runs of `trec_lstm` there: final metrics {said}."]
    runs = r["runs"]
    one = [
        n
        for n in ("trec gpu", "trec ddp (1 GPU)", "trec fsdp (1 GPU)")
        if runs.get(n, {}).get("exit") == 0
    ]
    accs = {runs[n]["metrics"]["test/acc"] for n in one}
    if len(one) > 1:
        cost = "."
        if {"trec fsdp (1 GPU)", "trec gpu"} <= set(one):
            ratio = runs["trec fsdp (1 GPU)"]["run_s"] / runs["trec gpu"]["run_s"]
            cost = f"; `fsdp` took {ratio:.2f}x the seconds of `gpu` (nothing to shard there)."
        lines.append(
            f"On one device, {', '.join(f'`{n}`' for n in one)} gave "
            f"{'the same' if len(accs) == 1 else 'different'} test accuracy "
            f"({', '.join(f'{a:.4f}' for a in sorted(accs))}){cost}"
        )
    return lines


if __name__ == "__main__":
    main()
