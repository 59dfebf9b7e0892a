"""Comparison plots: metric curves over training, scatter and parallel coordinates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from labrun.compare.stats import grouping_value
from labrun.files import pyplot
from labrun.store.query import run_label


def plot_curves(client: Any, runs: Sequence[Any], metric: str) -> Any:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for r in runs:
        history = sorted(client.get_metric_history(r.info.run_id, metric), key=lambda m: m.step)
        if history:  # markers: a run with one point is a dot, not an empty plot
            steps, values = [m.step for m in history], [m.value for m in history]
            ax.plot(steps, values, marker="o", markersize=3, label=run_label(r))
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} over training")
    if len(runs) <= 12:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_pooled_curves(client: Any, runs: Sequence[Any], keys: Sequence[str], metric: str) -> Any:
    """One curve per group of seeds: the mean at each step, and a band of one std."""
    import numpy as np

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    groups: dict[tuple, list[dict[int, float]]] = {}
    for r in runs:
        history = {m.step: m.value for m in client.get_metric_history(r.info.run_id, metric)}
        if history:
            groups.setdefault(tuple(grouping_value(r, k) for k in keys), []).append(history)
    for key, curves in sorted(groups.items(), key=lambda kv: str(kv[0])):
        steps = sorted(set.intersection(*(set(c) for c in curves)))  # steps every seed logged
        if not steps:
            continue
        values = np.array([[c[s] for s in steps] for c in curves])
        mean, std = values.mean(axis=0), values.std(axis=0, ddof=1 if len(curves) > 1 else 0)
        label = f"{', '.join(map(str, key))} (n={len(curves)})"
        ax.plot(steps, mean, marker="o", markersize=3, label=label)
        ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: mean of the seeds, band: one std")
    ax.legend(fontsize=7, title=", ".join(keys), title_fontsize=7)
    fig.tight_layout()
    return fig


def _numeric(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def plot_scatter(runs: Sequence[Any], params: Sequence[str], metric: str) -> Any:
    plt = pyplot()
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
    plt = pyplot()
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
