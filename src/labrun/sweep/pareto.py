"""Multi-objective searches: `hparams_search.objectives` lists two (or more) metrics with their
directions (accuracy up, parameter count down); Optuna keeps the Pareto front, the trials no
other trial beats on every objective, and the search's parent run holds it."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, ListConfig

from labrun.errors import ConfigError
from labrun.files import pyplot

DIRECTIONS = ("maximize", "minimize")
ARTIFACT = "sweep/pareto.json"


def objectives(base: DictConfig) -> list[tuple[str, str]]:
    """(metric, direction) of each objective: `hparams_search.objectives`, else the config's
    one `objective`."""
    listed = base.hparams_search.get("objectives")
    if not listed:
        return [(str(base.objective.metric), str(base.objective.direction))]
    return [(str(o.metric), str(o.direction)) for o in listed]


def check_objectives(hs: DictConfig) -> None:
    """Two or more objectives, each a metric and a direction, and no pruner (Optuna prunes
    single-objective studies only)."""
    listed = hs.get("objectives")
    if listed is None:
        return
    where = "'hparams_search.objectives'"
    if not isinstance(listed, ListConfig | list) or len(listed) < 2:
        raise ConfigError(f"{where} must list two or more {{metric, direction}}, got {listed!r}")
    for i, item in enumerate(listed):
        if not isinstance(item, DictConfig) or not isinstance(item.get("metric"), str):
            raise ConfigError(
                f"{where}[{i}] must be {{metric: NAME, direction: ...}}, got {item!r}"
            )
        if item.get("direction") not in DIRECTIONS:
            got = item.get("direction")
            raise ConfigError(f"{where}[{i}].direction must be maximize or minimize, got {got!r}")
    if hs.pruner.type != "none":
        raise ConfigError(
            f"{where}: Optuna prunes only single-objective studies; "
            "set hparams_search.pruner.type=none"
        )


def values_of(run_metrics: dict[str, float], wanted: list[tuple[str, str]]) -> list[float] | None:
    """The trial's value for each objective, from its run's metrics; None if one is missing or
    NaN (a failed trial)."""
    values = [run_metrics.get(metric) for metric, _ in wanted]
    if any(v is None or math.isnan(v) for v in values):
        return None
    return [float(v) for v in values]  # type: ignore[arg-type]


def front(study: Any, trial_runs: dict[int, str]) -> list[dict[str, Any]]:
    """The Pareto front: each trial on it with its values, params and run id, by number."""
    return [
        {
            "trial": t.number,
            "values": list(t.values),
            "params": dict(t.params),
            "run_id": trial_runs.get(t.number),
        }
        for t in sorted(study.best_trials, key=lambda t: t.number)
    ]


def record_pareto(
    client: Any,
    parent_id: str,
    study: Any,
    wanted: list[tuple[str, str]],
    trial_runs: dict[int, str],
) -> list[dict[str, Any]]:
    """The front as `sweep/pareto.json` and `sweep/pareto.png`, its trials as the parent's tag
    `labrun.pareto_trials` and in its description; returns it."""
    from mlflow.entities import RunTag
    from optuna.trial import TrialState

    found = front(study, trial_runs)
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    client.log_dict(
        parent_id,
        {"objectives": [{"metric": m, "direction": d} for m, d in wanted], "front": found},
        ARTIFACT,
    )
    numbers = ",".join(str(t["trial"]) for t in found)
    names = " vs ".join(f"{m} ({d[:3]})" for m, d in wanted)
    note = (
        f"Multi-objective search, {names}: {len(found)} of {len(done)} trials on the Pareto "
        f"front ({numbers})."
    )
    client.log_batch(
        parent_id,
        tags=[RunTag("labrun.pareto_trials", numbers), RunTag("mlflow.note.content", note)],
    )
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    on = {t["trial"] for t in found}
    rest = [t for t in done if t.number not in on]
    ax.scatter([t.values[1] for t in rest], [t.values[0] for t in rest], c="#999", label="trials")
    best = sorted(found, key=lambda t: t["values"][1])
    ax.plot(
        [t["values"][1] for t in best],
        [t["values"][0] for t in best],
        "o-",
        c="#c44e52",
        label="Pareto front",
    )
    for t in best:
        ax.annotate(str(t["trial"]), (t["values"][1], t["values"][0]), fontsize=7)
    ax.set_xlabel(f"{wanted[1][0]} ({wanted[1][1]})")
    ax.set_ylabel(f"{wanted[0][0]} ({wanted[0][1]})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    client.log_figure(parent_id, fig, "sweep/pareto.png")
    plt.close(fig)
    return found


def print_front(found: list[dict[str, Any]], wanted: list[tuple[str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"Pareto front: {' vs '.join(m for m, _ in wanted)}"
    table = Table(title=title, min_width=len(title) + 2)
    table.add_column("trial", justify="right")
    for metric, direction in wanted:
        table.add_column(f"{metric} ({direction[:3]})", justify="right", no_wrap=True)
    for t in found:
        table.add_row(str(t["trial"]), *(f"{v:.4g}" for v in t["values"]))
    Console().print(table)
