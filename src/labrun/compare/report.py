"""`labrun compare`: which runs differ in what, and whether a difference is real."""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

from labrun.compare.diff import pair_diff
from labrun.compare.plots import plot_curves, plot_parallel, plot_pooled_curves, plot_scatter
from labrun.compare.render import Section, png_bytes, print_rich, render
from labrun.compare.select import pick_metrics, select
from labrun.compare.stats import (
    BOOTSTRAP_NOTE,
    TEST_NOTE,
    group_stats,
    grouping_value,
    seeds_advice,
)
from labrun.errors import LabrunError
from labrun.store.client import client_for
from labrun.store.query import differing_params, rows, run_label


def compare(args: argparse.Namespace) -> str:
    """Select, tabulate, pool and plot as `args` (`labrun compare`'s options) say; returns the
    rendered report (empty when it was printed as a rich table)."""
    client = client_for(args.tracking_uri)
    runs = select(client, args)
    metrics = pick_metrics(runs, args.metric)
    params = differing_params(runs)
    if len(args.runs) == 2 and not args.group_by:
        sections = pair_sections(client, runs[0], runs[1], metrics)
    else:
        sections = run_sections(runs, params, metrics)
    note = ""
    group_by = group_keys(runs, args.group_by or [])
    if group_by:
        pooled, advice = group_sections(runs, group_by, metrics, args.ci, args.seeds_needed)
        sections += pooled
        note = "\n".join(
            [*advice, TEST_NOTE, *([BOOTSTRAP_NOTE] if args.ci == "bootstrap" else [])]
        )
    figures = make_figures(client, runs, params, metrics, args.plot, group_by)
    if args.sweep and args.format == "html":
        figures.update(search_figures(client, args.sweep))
    if args.format == "table" and not args.output:
        print_rich([compact(s) if s[1][-1] == "p_holm" else s for s in sections], note)
        return ""
    fmt = "md" if args.format == "table" else args.format
    text = render(fmt, sections, figures, note)
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        for name, fig in figures.items():
            (out / f"{name}.png").write_bytes(png_bytes(fig))
        (out / f"compare.{fmt}").write_text(text)
        print(f"wrote {out / f'compare.{fmt}'}")
    else:
        sys.stdout.write(text)
    return text


def run_sections(runs: list[Any], params: list[str], metrics: list[str]) -> list[Section]:
    """What a reader came for first: each run with its objective and metrics, best first;
    then only the params that differ between them."""
    objective = objective_of(runs)
    shown = [m for m in ([objective] if objective else []) if m not in metrics] + metrics
    table = rows(runs, params, shown)
    if objective:
        sign = -1 if lower_is_better(objective) else 1
        table.sort(key=lambda r: -sign * r[objective] if r[objective] is not None else math.inf)
    header = ["run", "status", *shown]
    sections: list[Section] = [
        (f"{len(runs)} runs", header, [[r[h] for h in header] for r in table])
    ]
    if params:
        sections.append(
            ("what differs", ["run", *params], [[r["run"], *(r[p] for p in params)] for r in table])
        )
    return sections


def objective_of(runs: list[Any]) -> str | None:
    """The objective metric the runs share (`objective.metric`), when they logged it."""
    named = {r.data.params.get("objective.metric") for r in runs} - {None}
    if len(named) == 1 and any(m in r.data.metrics for r in runs for m in named):
        return named.pop()
    return None


def pair_sections(client: Any, a: Any, b: Any, metrics: list[str]) -> list[Section]:
    """Two runs side by side: config, metrics with their delta, provenance, packages."""
    with tempfile.TemporaryDirectory() as tmp:
        diff = pair_diff(client, a, b, metrics, Path(tmp))
    la, lb = run_label(a), run_label(b)
    deltas = [
        [m, x, y, (y - x) if x is not None and y is not None else None]
        for m, x, y in diff["metrics"]
    ]
    sections: list[Section] = [
        ("config", ["param", la, lb], [list(p) for p in diff["params"]]),
        ("metrics", ["metric", la, lb, "delta"], deltas),
        ("provenance", ["tag", la, lb], [list(t) for t in diff["provenance"]]),
    ]
    if diff["packages"]:
        sections.append(
            ("packages (in one run only)", ["package"], [[p] for p in diff["packages"]])
        )
    return sections


GROUP_HEADER = ["n", "mean", "std", "ci_low", "ci_high"]
VERSUS_HEADER = ["delta", "delta_low", "delta_high", "g", "g_low", "g_high", "p_vs_best", "p_holm"]
LOWER_IS_BETTER = ("loss", "fid", "kid", "kl", "error", "perplexity")


def group_keys(runs: list[Any], keys: list[str]) -> list[str]:
    """`--group-by model`: a config group groups by its choice (`lstm_classifier`,
    `kim_cnn`), which each run records; runs recorded before choices were (or made without
    Hydra) group by the class the node builds (`model._target_`)."""

    def resolved(key: str) -> str:
        node = f"{key}._target_"
        recorded = [r.data.params for r in runs]
        if any(key in p for p in recorded) or all(grouping_value(r, key) for r in runs):
            return key
        return node if any(node in p for p in recorded) else key

    return [resolved(k) for k in keys]


def group_sections(
    runs: list[Any],
    keys: list[str],
    metrics: list[str],
    ci: str = "t",
    seeds_delta: float | None = None,
) -> tuple[list[Section], list[str]]:
    """One pooled table per metric (the runs that share the values of `keys`, i.e. seeds,
    pooled; each group against the best), and the seeds-needed advice for the first metric."""
    unknown = [k for k in keys if all(grouping_value(r, k) is None for r in runs)]
    if unknown:
        raise LabrunError(
            f"--group-by {unknown[0]}: no selected run has that param or config group; "
            "use a param (model.hidden_size) or a group (model, data, model/optimizer)"
        )
    sections: list[Section] = []
    advice: list[str] = []
    header = [*keys, *GROUP_HEADER, *VERSUS_HEADER]
    for metric in metrics:
        groups = group_stats(runs, keys, metric, maximize=not lower_is_better(metric), ci=ci)
        title = f"{metric} by {', '.join(keys)}"
        sections.append((title, header, [[g[h] for h in header] for g in groups]))
        if seeds_delta is not None and not advice:
            advice = [f"seeds needed ({metric}, 80% power, 5% two-sided):"]
            advice += seeds_advice(groups, keys, seeds_delta)
    return sections, advice


def compact(section: Section) -> Section:
    """A pooled table narrow enough for a terminal: an interval in one cell beside its value."""
    title, header, body = section
    keys = header[: header.index("n")]
    at = {h: i for i, h in enumerate(header)}

    def span(row: list[Any], value: str, low: str, high: str) -> str:
        if row[at[value]] is None or math.isnan(row[at[value]]):
            return ""
        return f"{row[at[value]]:.3g} [{row[at[low]]:.3g}, {row[at[high]]:.3g}]"

    rows = [
        [
            *row[: len(keys)],
            row[at["n"]],
            f"{row[at['mean']]:.4g} ± {row[at['std']]:.2g}",
            span(row, "mean", "ci_low", "ci_high").split(" ", 1)[-1],
            span(row, "delta", "delta_low", "delta_high"),
            span(row, "g", "g_low", "g_high"),
            row[at["p_vs_best"]],
            row[at["p_holm"]],
        ]
        for row in body
    ]
    head = [*keys, "n", "mean ± std", "95% CI", "delta vs best [CI]", "g [CI]", "p", "p Holm"]
    return title, head, rows


def lower_is_better(metric: str) -> bool:
    """Whether the best group of `metric` is the lowest: losses, FID/KID, KL, errors."""
    name = metric.rsplit("/", 1)[-1].lower()
    return any(word in name for word in LOWER_IS_BETTER)


def make_figures(
    client: Any,
    runs: list[Any],
    params: list[str],
    metrics: list[str],
    kinds: list[str],
    group_by: list[str] | None = None,
) -> dict[str, Any]:
    figures = {}
    for kind in kinds:
        metric = metrics[0]
        if kind == "curves":
            logged = ("val/acc", "val/fid", "train/loss_step")
            curve = next((m for m in logged if any(m in r.data.metrics for r in runs)), metric)
            figures["curves"] = plot_curves(client, runs, curve)
            if group_by:
                figures["pooled_curves"] = plot_pooled_curves(client, runs, group_by, curve)
        elif kind == "scatter":
            figures["scatter"] = plot_scatter(runs, params, metric)
        else:
            figures["parallel"] = plot_parallel(runs, params, metric)
    return figures


def search_figures(client: Any, sweep: str) -> dict[str, bytes]:
    """The plots a search stored on its parent run: hyperparameter importance, the Pareto front
    of a multi-objective search, the trials."""
    from labrun.store.query import find_sweep_parent

    parent = find_sweep_parent(client, sweep)
    if parent is None:
        return {}
    found = {}
    stored = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
    with tempfile.TemporaryDirectory() as tmp:
        stored_plots = (
            ("importance", "sweep/importance.png"),
            ("pareto_front", "sweep/pareto.png"),
            ("trials", "sweep/trials.png"),
        )
        for name, path in stored_plots:
            if path in stored:
                local = client.download_artifacts(parent.info.run_id, path, tmp)
                found[name] = Path(local).read_bytes()
    return found
