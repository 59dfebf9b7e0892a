"""`make bench BENCH_ARGS=--quality`: every default recipe under seeds 1, 2 and 3, as a user runs
them (`labrun train -m ... seed=1,2,3`, two jobs at a time), pooled by the product's own
comparison (`labrun compare --sweep ID --group-by tracking.experiment --format csv`). Its
rows are the table in BENCHMARKS.md, with the published reference beside each recipe and the
minutes per run (one torch thread: a run's minutes are its CPU-minutes).

Three sweeps in one fresh store: the text recipes; the sentence sets no recipe was tuned on
(`experiment=mr_lstm data=cr,subj,mpqa`: only the data swapped); the GANs. Writes
benchmarks/quality.json after each sweep; `section()` renders it into BENCHMARKS.md.
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("quality.json")
SEEDS = "seed=1,2,3"
COMMON = ["hydra/launcher=parallel", "~callbacks.progress_bar", "tracking.log_model=false"]
# name -> (overrides, metrics compared); each job's MLflow experiment names its group.
SWEEPS: dict[str, tuple[list[str], list[str]]] = {
    "text": (["experiment=trec_lstm,sst2_lstm,mr_lstm,trec_cnn"], ["test/acc"]),
    "unseen sets": (
        [
            "experiment=mr_lstm",
            "data=cr,subj,mpqa",
            "tracking.experiment=mr_lstm-on-${hydra:runtime.choices.data}",
        ],
        ["test/acc"],
    ),
    "image": (
        ["experiment=mnist_dcgan,fashion_mnist_dcgan"],
        ["test/fid", "test/kid", "test/coverage_kl", "test/classes_covered", "test/confident"],
    ),
}
# group -> what it is measured against (Kim 2014, Table 2, CNN-rand; the GANs' goals)
REFERENCE = {
    "trec_lstm": "91.2 (Kim 2014 CNN-rand)",
    "trec_cnn": "91.2 (Kim 2014 CNN-rand)",
    "sst2_lstm": "82.7 (Kim 2014 CNN-rand)",
    "mr_lstm": "76.1 (Kim 2014 CNN-rand, 10-fold CV)",
    "mr_lstm-on-cr": "79.8 (Kim 2014 CNN-rand, 10-fold CV)",
    "mr_lstm-on-subj": "89.6 (Kim 2014 CNN-rand, 10-fold CV)",
    "mr_lstm-on-mpqa": "83.4 (Kim 2014 CNN-rand, 10-fold CV)",
    "mnist_dcgan": "FID <= 107.7 (half of 215.5), coverage KL < 0.02",
    "fashion_mnist_dcgan": "old recipe, seed 42: FID 80.2, coverage KL 0.012",
}


def labrun(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "labrun", *args], env=env, capture_output=True, text=True
    )


def pooled(csv_text: str, key: str) -> dict[str, dict[str, dict[str, float]]]:
    """`labrun compare --format csv`'s pooled sections: group -> metric -> n, mean, std, ci."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    title, header = "", []
    for row in csv.reader(io.StringIO(csv_text)):
        if row and row[0].startswith("# "):
            title, header = row[0][2:], []
        elif not header:
            header = row
        elif header[0] == key and "mean" in header:
            metric = title.split()[0]
            values = dict(zip(header, row, strict=False))
            out.setdefault(values[key], {})[metric] = {
                k: float(values[k]) for k in ("n", "mean", "std", "ci_low", "ci_high")
            }
    return out


def minutes(store: str, sweep: str, key: str) -> dict[str, float]:
    """Median minutes per run of each group, from the MLflow runs' start and end times."""
    from mlflow.tracking import MlflowClient

    from labrun.store.query import search_runs

    runs = search_runs(MlflowClient(store), sweep=sweep)
    per: dict[str, list[float]] = {}
    for r in runs:
        if r.info.end_time:
            span = (r.info.end_time - r.info.start_time) / 60_000
            per.setdefault(r.data.params.get(key, "?"), []).append(span)
    return {g: statistics.median(v) for g, v in per.items()}


def one_sweep(
    name: str, overrides: list[str], metrics: list[str], env: dict[str, str], extra: list[str]
) -> dict:
    run_dir = Path(env["LABRUN_RUN_DIR"])
    before = set((run_dir / "train").glob("multirun_*"))
    start = time.time()
    done = labrun(["train", "-m", *overrides, SEEDS, *COMMON, *extra], env)
    wall = time.time() - start
    if done.returncode != 0:
        raise SystemExit(f"{name}: labrun train -m failed:\n{done.stderr[-3000:]}")
    (folder,) = set((run_dir / "train").glob("multirun_*")) - before
    key = "tracking.experiment"
    args = ["compare", "--sweep", folder.name, "--group-by", key, "--format", "csv"]
    shown = labrun([*args, *[a for m in metrics for a in ("--metric", m)]], env)
    if shown.returncode != 0:
        raise SystemExit(f"{name}: labrun compare failed:\n{shown.stderr[-3000:]}")
    store = f"sqlite:///{run_dir}/mlflow.db"
    return {
        "command": " ".join(["labrun train -m", *overrides, SEEDS, *extra]),
        "compare": " ".join(["labrun", *args]),
        "wall_s": wall,
        "groups": pooled(shown.stdout, key),
        "minutes_per_run": minutes(store, folder.name, key),
        "when": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
    }


def machine() -> str:
    """The CPU and the kernels torch picked on it: the same code and seeds give other last
    bits on another CPU, and a 3-seed mean moved by up to 1.5 points between two machines."""
    import torch

    from labrun.tracking.provenance import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} cores, {torch.backends.cpu.get_cpu_capability()}"


def main(
    names: list[str] | None = None,
    extra: list[str] | None = None,
    out: Path | None = None,
    run_dir: str | None = None,
) -> dict[str, Any]:
    """Run the named sweeps (all by default) with `extra` overrides into one store in
    `run_dir` (a new temporary folder by default); write `out` after each sweep."""
    out = out or RESULTS
    run_dir = run_dir or tempfile.mkdtemp(prefix="labrun-quality-")
    share_feature_spaces(run_dir)
    env = {**os.environ, "LABRUN_RUN_DIR": run_dir}
    env.pop("MLFLOW_TRACKING_URI", None)
    results = json.loads(out.read_text()) if out.is_file() else {}
    for name in names or list(SWEEPS):
        overrides, metrics = SWEEPS[name]
        print(f"quality: {name} ...", flush=True)
        results[name] = one_sweep(name, overrides, metrics, env, list(extra or []))
        out.write_text(json.dumps(results, indent=2))
    return results


def share_feature_spaces(run_dir: str) -> None:
    """The GANs' LeNet feature spaces come from this machine's cache, as for a user's own runs:
    their one-off training (minutes) is not part of a run's minutes, and two seeds starting
    together do not both train the same net."""
    home = Path(os.environ.get("LABRUN_RUN_DIR") or Path(__file__).resolve().parents[1] / "runs")
    shared = home / "cache" / "features"
    shared.mkdir(parents=True, exist_ok=True)
    link = Path(run_dir) / "cache" / "features"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(shared, target_is_directory=True)


def fmt(stats: dict[str, float], metric: str) -> str:
    scale = 100 if metric.endswith(("acc", "confident")) else 1  # shares in %, as papers print
    digits = 1 if scale == 100 or metric.endswith("fid") else 3
    return f"{stats['mean'] * scale:.{digits}f} ± {stats['std'] * scale:.{digits}f}"


def section(path: Path | None = None) -> list[str]:
    """The quality table for BENCHMARKS.md, from benchmarks/quality.json."""
    path = path or RESULTS
    if not path.is_file():
        return []
    results = json.loads(path.read_text())
    lines = [
        "## Recipe quality (`make bench BENCH_ARGS=--quality`)",
        "",
        "Seeds 1, 2, 3 of every default recipe; mean ± std over the seeds as `labrun compare "
        "--group-by tracking.experiment` pools them (accuracies in %). Minutes are the median "
        "run's, start to end, on one torch thread (its CPU-minutes), two runs at a time on "
        "this machine's two cores; the GANs' minutes leave out their LeNet feature space, "
        "trained once per machine and cached.",
        "",
    ]
    for name, sweep in results.items():
        metrics = sorted({m for g in sweep["groups"].values() for m in g})
        lines += [
            f"**{name}** (`{sweep['command']}`; {sweep['when']}; "
            f"{sweep.get('machine', 'CPU not recorded')})",
            "",
            "| recipe | " + " | ".join(metrics) + " | reference | min/run |",
            "| --- | " + " | ".join("---" for _ in metrics) + " | --- | --- |",
        ]
        for group, stats in sorted(sweep["groups"].items()):
            cells = [fmt(stats[m], m) if m in stats else "" for m in metrics]
            mins = sweep["minutes_per_run"].get(group)
            spent = f"{mins:.1f}" if mins is not None else ""
            lines.append(
                f"| {group} | {' | '.join(cells)} | {REFERENCE.get(group, '')} | {spent} |"
            )
        lines.append("")
    return lines


if __name__ == "__main__":
    main(sys.argv[1:] or None)
    print("\n".join(section()))
