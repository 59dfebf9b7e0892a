"""`labrun compare`: which runs differ in what, and whether a difference is real."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from labrun.compare.diff import pair_diff
from labrun.compare.plots import plot_curves, plot_parallel, plot_scatter
from labrun.compare.render import Section, print_rich, render
from labrun.compare.select import pick_metrics, select
from labrun.compare.stats import TEST_NOTE, group_stats
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
        table = rows(runs, params, metrics)
        header = ["run", "status", *params, *metrics]
        sections = [(f"{len(runs)} runs", header, [[r[h] for h in header] for r in table])]
    note = ""
    if args.group_by:
        sections += group_sections(runs, args.group_by, metrics)
        note = TEST_NOTE
    figures = make_figures(client, runs, params, metrics, args.plot)
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


def group_sections(runs: list[Any], keys: list[str], metrics: list[str]) -> list[Section]:
    """One pooled table per metric: the runs that share the values of `keys` (seeds) pooled."""
    unknown = [k for k in keys if all(k not in r.data.params for r in runs)]
    if unknown:
        raise LabrunError(f"--group-by {unknown[0]}: no selected run has that param")
    sections: list[Section] = []
    header = [*keys, "n", "mean", "std", "ci_low", "ci_high", "p_vs_best"]
    for metric in metrics:
        groups = group_stats(runs, keys, metric)
        title = f"{metric} by {', '.join(keys)}"
        sections.append((title, header, [[g[h] for h in header] for g in groups]))
    return sections


def make_figures(
    client: Any, runs: list[Any], params: list[str], metrics: list[str], kinds: list[str]
) -> dict[str, Any]:
    figures = {}
    for kind in kinds:
        metric = metrics[0]
        if kind == "curves":
            logged = ("val/acc", "val/fid", "train/loss_step")
            curve = next((m for m in logged if any(m in r.data.metrics for r in runs)), metric)
            figures["curves"] = plot_curves(client, runs, curve)
        elif kind == "scatter":
            figures["scatter"] = plot_scatter(runs, params, metric)
        else:
            figures["parallel"] = plot_parallel(runs, params, metric)
    return figures
