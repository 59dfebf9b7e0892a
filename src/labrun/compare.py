"""`labrun compare`: which runs differ in what, and whether a difference is real."""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labrun.errors import LabrunError
from labrun.tracking.query import differing_params, get_runs, rows, run_label, search_runs
from labrun.tracking.stored import default_uri
from labrun.tracking.sweeps import markdown_table

TEST_NOTE = (
    "Welch's t-test of each group against the best one: seeds make independent samples, "
    "groups are small and their variances need not be equal, so Student's pooled-variance "
    "test would be too optimistic. 95% CI: mean +- t(0.975, n-1) * std / sqrt(n)."
)
PROVENANCE_TAGS = (
    "labrun.git_commit",
    "labrun.git_dirty",
    "labrun.seed",
    "labrun.threads",
    "labrun.device",
    "labrun.hostname",
    "labrun.version",
    "labrun.data_fingerprint",
)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="labrun compare", description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", help="run ids; two ids give a side-by-side diff")
    p.add_argument("--experiment", action="append", default=[], help="experiment name (repeatable)")
    p.add_argument("--sweep", help="sweep id: a multirun folder name or an Optuna study name")
    p.add_argument("--tag", action="append", default=[], help="KEY=VALUE (repeatable)")
    p.add_argument("--filter", default="", help="an MLflow filter string")
    p.add_argument("--group-by", action="append", default=[], help="param key(s); seeds pooled")
    p.add_argument("--metric", action="append", default=[], help="metric(s); default: test/*")
    p.add_argument("--format", choices=["table", "csv", "md", "html"], default="table")
    p.add_argument("--plot", action="append", default=[], choices=["curves", "parallel", "scatter"])
    p.add_argument("-o", "--output", help="folder for the report file and plots")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="default: $MLFLOW_TRACKING_URI, else the project's runs/mlflow.db",
    )
    return p.parse_args(argv)


def select(client: Any, args: argparse.Namespace) -> list[Any]:
    if args.runs:
        runs = get_runs(client, args.runs)
    else:
        tags = {}
        for item in args.tag:
            key, sep, value = item.partition("=")
            if not sep:
                raise LabrunError(f"--tag takes KEY=VALUE, got '{item}'")
            tags[key] = value
        runs = search_runs(client, args.experiment, args.sweep, tags, args.filter)
    if not runs:
        raise LabrunError(
            "no runs match the selection; check --experiment, --sweep, --tag or --filter"
        )
    return runs


def pick_metrics(runs: Sequence[Any], wanted: Sequence[str]) -> list[str]:
    logged = sorted({m for r in runs for m in r.data.metrics})
    if wanted:
        missing = [m for m in wanted if m not in logged]
        if missing:
            raise LabrunError(
                f"metric {missing[0]} was never logged by the selected runs; "
                f"they logged: {', '.join(logged) or 'nothing'}"
            )
        return list(wanted)
    return [m for m in logged if m.startswith("test/")] or logged


def group_stats(
    runs: Sequence[Any], keys: Sequence[str], metric: str, maximize: bool = True
) -> list[dict[str, Any]]:
    """Runs pooled by the values of `keys`: n, mean, std, 95% CI, and Welch's p vs the best."""
    from scipy import stats

    groups: dict[tuple, list[float]] = {}
    for r in runs:
        value = r.data.metrics.get(metric)
        if value is None or math.isnan(value):
            continue
        groups.setdefault(tuple(r.data.params.get(k) for k in keys), []).append(value)
    if not groups:
        raise LabrunError(f"no run in the selection has a value for {metric}")
    out = []
    for key, values in groups.items():
        n = len(values)
        mean = sum(values) / n
        std = stats.tstd(values) if n > 1 else float("nan")
        half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n) if n > 1 else float("nan")
        out.append(
            {
                **dict(zip(keys, key, strict=True)),
                "n": n,
                "mean": mean,
                "std": std,
                "ci_low": mean - half,
                "ci_high": mean + half,
                "values": values,
            }
        )
    out.sort(key=lambda g: g["mean"], reverse=maximize)
    best = out[0]
    for g in out:
        if g is best or g["n"] < 2 or best["n"] < 2:
            g["p_vs_best"] = float("nan")
        else:
            g["p_vs_best"] = float(
                stats.ttest_ind(g["values"], best["values"], equal_var=False).pvalue
            )
    return out


def pair_diff(client: Any, a: Any, b: Any, metrics: Sequence[str], tmp: Path) -> dict[str, Any]:
    """Config, metric and provenance differences between two runs."""
    params = differing_params([a, b])
    prov = [
        (t, a.data.tags.get(t), b.data.tags.get(t))
        for t in PROVENANCE_TAGS
        if a.data.tags.get(t) != b.data.tags.get(t)
    ]
    packages = []
    try:
        freeze = [
            set(
                Path(
                    client.download_artifacts(
                        r.info.run_id, "provenance/requirements.txt", str(tmp / r.info.run_id)
                    )
                )
                .read_text()
                .split()
            )
            for r in (a, b)
        ]
        packages = sorted(freeze[0] ^ freeze[1])
    except Exception:  # a run recorded without provenance: nothing to diff
        packages = []
    return {
        "params": [(k, a.data.params.get(k), b.data.params.get(k)) for k in params],
        "metrics": [(m, a.data.metrics.get(m), b.data.metrics.get(m)) for m in metrics],
        "provenance": prov,
        "packages": packages,
    }


# -- plots ---------------------------------------------------------------------------------


def _fig() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(client: Any, runs: Sequence[Any], metric: str) -> Any:
    plt = _fig()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for r in runs:
        history = sorted(client.get_metric_history(r.info.run_id, metric), key=lambda m: m.step)
        if history:
            ax.plot([m.step for m in history], [m.value for m in history], label=run_label(r))
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} over training")
    if len(runs) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _numeric(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def plot_scatter(runs: Sequence[Any], params: Sequence[str], metric: str) -> Any:
    plt = _fig()
    shown = [p for p in params if all(_numeric(r.data.params.get(p)) is not None for r in runs)][:4]
    fig, axes = plt.subplots(
        1, max(1, len(shown)), figsize=(3.5 * max(1, len(shown)), 3.2), dpi=110, squeeze=False
    )
    for ax, p in zip(axes[0], shown, strict=False):
        ax.plot(
            [_numeric(r.data.params[p]) for r in runs],
            [r.data.metrics.get(metric) for r in runs],
            "o",
        )
        ax.set_xlabel(p)
        ax.set_ylabel(metric)
    fig.tight_layout()
    return fig


def plot_parallel(runs: Sequence[Any], params: Sequence[str], metric: str) -> Any:
    """Parallel coordinates: each numeric differing param and the metric, scaled to [0, 1]."""
    plt = _fig()
    axes_keys = [p for p in params if all(_numeric(r.data.params.get(p)) is not None for r in runs)]
    columns = [[_numeric(r.data.params[p]) for r in runs] for p in axes_keys]
    columns.append([r.data.metrics.get(metric, float("nan")) for r in runs])
    labels = [*axes_keys, metric]
    scaled = []
    for col in columns:
        lo, hi = min(col), max(col)
        scaled.append([(v - lo) / (hi - lo) if hi > lo else 0.5 for v in col])
    fig, ax = plt.subplots(figsize=(1.8 * len(labels) + 1, 4), dpi=110)
    cmap = plt.get_cmap("viridis")
    for i in range(len(runs)):
        ax.plot(range(len(labels)), [c[i] for c in scaled], color=cmap(scaled[-1][i]), alpha=0.8)
    ax.set_xticks(range(len(labels)), labels, rotation=20)
    ax.set_yticks([])
    ax.set_title(f"parallel coordinates, coloured by {metric}")
    fig.tight_layout()
    return fig


# -- output --------------------------------------------------------------------------------


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return "" if v is None else str(v)


def render(
    fmt: str,
    sections: list[tuple[str, list[str], list[list[Any]]]],
    figures: dict[str, Any],
    note: str,
) -> str:
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        for title, header, body in sections:
            writer.writerow([f"# {title}"])
            writer.writerow(header)
            writer.writerows([[_cell(v) for v in row] for row in body])
        return out.getvalue()
    if fmt == "md":
        parts = []
        for title, header, body in sections:
            table = [dict(zip(header, row, strict=True)) for row in body]
            parts.append(f"## {title}\n\n" + markdown_table(table, header))
        parts += [f"![{name}]({name}.png)" for name in figures]
        return "\n".join(parts) + (f"\n{note}\n" if note else "")
    # html: self-contained, plots embedded
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>labrun compare</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style></head><body>",
        "<h1>labrun compare</h1>",
    ]
    for title, header, body in sections:
        parts.append(
            f"<h2>{html.escape(title)}</h2><table><tr>"
            + "".join(f"<th>{html.escape(h)}</th>" for h in header)
            + "</tr>"
        )
        for row in body:
            parts.append(
                "<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
            )
        parts.append("</table>")
    for name, fig in figures.items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        data = base64.b64encode(buf.getvalue()).decode()
        parts.append(
            f"<h2>{html.escape(name)}</h2><img alt='{name}' src='data:image/png;base64,{data}'>"
        )
    if note:
        parts.append(f"<p>{html.escape(note)}</p>")
    return "\n".join(parts) + "</body></html>\n"


def print_rich(sections: list[tuple[str, list[str], list[list[Any]]]], note: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for title, header, body in sections:
        table = Table(title=title)
        for h in header:
            table.add_column(h)
        for row in body:
            table.add_row(*[_cell(v) for v in row])
        console.print(table)
    if note:
        console.print(note)


def compare(args: argparse.Namespace) -> str:
    import tempfile

    from mlflow.tracking import MlflowClient

    client = MlflowClient(args.tracking_uri or default_uri())
    runs = select(client, args)
    metrics = pick_metrics(runs, args.metric)
    params = differing_params(runs)
    sections: list[tuple[str, list[str], list[list[Any]]]] = []
    note = ""
    if len(args.runs) == 2 and not args.group_by:
        with tempfile.TemporaryDirectory() as tmp:
            diff = pair_diff(client, runs[0], runs[1], metrics, Path(tmp))
        a, b = (run_label(r) for r in runs)
        sections.append(("config", ["param", a, b], [list(p) for p in diff["params"]]))
        sections.append(
            (
                "metrics",
                ["metric", a, b, "delta"],
                [
                    [m, x, y, (y - x) if x is not None and y is not None else None]
                    for m, x, y in diff["metrics"]
                ],
            )
        )
        sections.append(("provenance", ["tag", a, b], [list(t) for t in diff["provenance"]]))
        if diff["packages"]:
            sections.append(
                ("packages (in one run only)", ["package"], [[p] for p in diff["packages"]])
            )
    else:
        table = rows(runs, params, metrics)
        header = ["run", "status", *params, *metrics]
        sections.append((f"{len(runs)} runs", header, [[r[h] for h in header] for r in table]))
    if args.group_by:
        unknown = [k for k in args.group_by if all(k not in r.data.params for r in runs)]
        if unknown:
            raise LabrunError(f"--group-by {unknown[0]}: no selected run has that param")
        for metric in metrics:
            groups = group_stats(runs, args.group_by, metric)
            header = [*args.group_by, "n", "mean", "std", "ci_low", "ci_high", "p_vs_best"]
            sections.append(
                (
                    f"{metric} by {', '.join(args.group_by)}",
                    header,
                    [[g[h] for h in header] for g in groups],
                )
            )
        note = TEST_NOTE
    figures = {}
    for kind in args.plot:
        metric = metrics[0]
        if kind == "curves":
            curve = next(
                (
                    m
                    for m in ("val/acc", "val/fid", "train/loss_step")
                    if any(m in r.data.metrics for r in runs)
                ),
                metric,
            )
            figures["curves"] = plot_curves(client, runs, curve)
        elif kind == "scatter":
            figures["scatter"] = plot_scatter(runs, params, metric)
        else:
            figures["parallel"] = plot_parallel(runs, params, metric)
    if args.format == "table" and not args.output:
        print_rich(sections, note)
        return ""
    fmt = "md" if args.format == "table" else args.format
    text = render(fmt, sections, figures, note)
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        for name, fig in figures.items():
            fig.savefig(out / f"{name}.png")
        (out / f"compare.{fmt}").write_text(text)
        print(f"wrote {out / f'compare.{fmt}'}")
    else:
        sys.stdout.write(text)
    return text


def run(argv: list[str]) -> None:
    compare(parse(argv))
