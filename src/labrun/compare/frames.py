"""`labrun.compare(...)` and `labrun.runs(...)` for notebooks: the CLI's selection as pandas
DataFrames."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from labrun.compare.report import group_keys, group_sections
from labrun.compare.select import pick_metrics, select
from labrun.store.client import client_for
from labrun.store.query import differing_params, rows


def selection(
    runs: Sequence[str] = (),
    experiment: str | Sequence[str] = (),
    sweep: str | None = None,
    tag: dict[str, str] | None = None,
    filter: str = "",
    tracking_uri: str | None = None,
) -> tuple[Any, list[Any]]:
    """The store's client and the runs `labrun compare` would select with these options."""
    client = client_for(tracking_uri)
    args = argparse.Namespace(
        runs=list(runs),
        experiment=[experiment] if isinstance(experiment, str) else list(experiment),
        sweep=sweep,
        tag=[f"{k}={v}" for k, v in (tag or {}).items()],
        filter=filter,
    )
    return client, select(client, args)


def runs_frame(found: Sequence[Any], params: Sequence[str], metrics: Sequence[str]) -> Any:
    """One row per run; columns `params.KEY` and `metrics.KEY` as `mlflow.search_runs` names
    them (a param may be called `run_id`), beside `run_id`, `run`, `status`, `task`."""
    import pandas as pd

    table = []
    for run, row in zip(found, rows(found, [], []), strict=True):
        row.update(
            experiment_id=run.info.experiment_id,
            task=run.data.tags.get("labrun.task", ""),
            start_time=pd.to_datetime(run.info.start_time, unit="ms"),
        )
        row.update({f"params.{p}": run.data.params.get(p) for p in params})
        row.update({f"metrics.{m}": run.data.metrics.get(m) for m in metrics})
        table.append(row)
    return pd.DataFrame(table)


def runs(**selection_options: Any) -> Any:
    """Every selected run: id, name, status, all params and all final metrics."""
    _, found = selection(**selection_options)
    params = sorted({k for r in found for k in r.data.params})
    metrics = sorted({k for r in found for k in r.data.metrics})
    return runs_frame(found, params, metrics)


def compare(
    runs: Sequence[str] = (),
    group_by: str | Sequence[str] = (),
    metric: str | Sequence[str] = (),
    **selection_options: Any,
) -> Any:
    """Without `group_by`: one row per run, the params that differ and the metrics. With it:
    one row per group and metric, seeds pooled (n, mean, std, 95% CI, and against the best:
    the difference and Hedges' g with their CIs, Welch's p and Holm's corrected p)."""
    import pandas as pd

    _, found = selection(runs, **selection_options)
    metrics = pick_metrics(found, [metric] if isinstance(metric, str) else list(metric))
    keys = group_keys(found, [group_by] if isinstance(group_by, str) else list(group_by))
    if not keys:
        return runs_frame(found, differing_params(found), metrics)
    frames = []
    sections, _ = group_sections(found, keys, metrics)
    for (_title, header, table), name in zip(sections, metrics, strict=True):
        frame = pd.DataFrame(table, columns=header)
        frame.insert(0, "metric", name)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
