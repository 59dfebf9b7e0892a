"""Reading runs back: selection, the params that differ, metrics as rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from labrun.config.locations import is_location
from labrun.errors import LabrunError


def search_runs(
    client: MlflowClient,
    experiments: Sequence[str] = (),
    sweep: str | None = None,
    tags: dict[str, str] | None = None,
    filter_string: str = "",
    include_parents: bool = False,
) -> list[Run]:
    """Runs matching every criterion given, oldest first; sweep parents left out by default."""
    if experiments:
        ids = []
        for name in experiments:
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise LabrunError(
                    f"no experiment '{name}' in the tracking store {client.tracking_uri}"
                )
            ids.append(exp.experiment_id)
    else:
        ids = [e.experiment_id for e in client.search_experiments()]
    clauses = [filter_string] if filter_string else []
    if sweep:
        clauses.append(f"tags.`labrun.sweep_id` = '{sweep}'")
    for key, value in (tags or {}).items():
        clauses.append(f"tags.`{key}` = '{value}'")
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(
            ids,
            " and ".join(clauses),
            max_results=1000,
            page_token=token,
            order_by=["attributes.start_time ASC"],
        )
        runs += list(page)
        token = page.token
        if not token:
            break
    if not include_parents:
        runs = [r for r in runs if r.data.tags.get("labrun.role") != "parent"]
    return runs


def differing_params(runs: Sequence[Run]) -> list[str]:
    """Param keys whose values are not the same in every run (missing counts as a value)."""
    keys = sorted({k for r in runs for k in r.data.params})
    return [k for k in keys if not is_location(k) and len({r.data.params.get(k) for r in runs}) > 1]


def run_label(run: Run) -> str:
    return run.info.run_name or run.info.run_id[:8]


def rows(
    runs: Sequence[Run], params: Sequence[str], metrics: Sequence[str]
) -> list[dict[str, Any]]:
    """One dict per run: id, name, status, the given params and final metric values."""
    out = []
    for r in runs:
        row: dict[str, Any] = {
            "run_id": r.info.run_id,
            "run": run_label(r),
            "status": r.info.status,
        }
        row.update({p: r.data.params.get(p) for p in params})
        row.update({m: r.data.metrics.get(m) for m in metrics})
        out.append(row)
    return out


def find_sweep_parent(client: MlflowClient, run_or_sweep_id: str) -> Run | None:
    """The sweep parent named by its run id or its sweep id; None when it names neither."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_or_sweep_id)
    except MlflowException:
        run = None
    if run is not None:
        return run if run.data.tags.get("labrun.role") == "parent" else None
    for exp in client.search_experiments():
        found = client.search_runs(
            [exp.experiment_id],
            f"tags.`labrun.sweep_id` = '{run_or_sweep_id}' and tags.`labrun.role` = 'parent'",
        )
        if found:
            return found[0]
    return None
