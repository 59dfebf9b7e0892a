"""Which hyperparameters of a search mattered: Optuna's fANOVA importance of each parameter
for the objective, over the search's completed trials, on its parent run."""

from __future__ import annotations

import logging
from typing import Any

from labrun.files import pyplot

log = logging.getLogger(__name__)
MIN_TRIALS = 3  # fewer completed trials: a forest fitted on them says nothing
ARTIFACT = "sweep/importance.json"


def importances(study: Any) -> dict[str, float]:
    """Each searched parameter's share of the objective's variance (fANOVA, seeded: the same
    trials always give the same numbers), largest first; empty with too few trials."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < MIN_TRIALS or len({tuple(sorted(t.params.items())) for t in done}) < 2:
        return {}
    first = (lambda t: t.values[0]) if len(study.directions) > 1 else None  # the first objective
    found = optuna.importance.get_param_importances(
        study, evaluator=FanovaImportanceEvaluator(seed=0), target=first
    )
    return {name: float(value) for name, value in found.items()}


def record_importance(client: Any, parent_id: str, study: Any, metric: str) -> dict[str, float]:
    """The importance table (json and a bar plot) and one `importance/<param>` metric per
    parameter on the parent run; returns it."""
    found = importances(study)
    if not found:
        log.info("too few completed trials (< %d) for hyperparameter importance", MIN_TRIALS)
        return found
    trials = len(study.get_trials(deepcopy=False))
    client.log_dict(
        parent_id,
        {"metric": metric, "evaluator": "fanova", "trials": trials, "importance": found},
        ARTIFACT,
    )
    for name, value in found.items():
        client.log_metric(parent_id, f"importance/{name}", value)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(found) + 1.2), dpi=110)
    names = list(found)[::-1]
    ax.barh(names, [found[n] for n in names], color="#4c72b0")
    ax.set_xlabel(f"importance for {metric} (fANOVA)")
    ax.set_xlim(0, 1)
    fig.tight_layout()
    client.log_figure(parent_id, fig, "sweep/importance.png")
    plt.close(fig)
    return found


def print_importance(found: dict[str, float], metric: str) -> None:
    from rich.console import Console
    from rich.table import Table

    title = f"hyperparameter importance for {metric} (fANOVA)"
    table = Table(title=title, min_width=len(title) + 2)
    table.add_column("param", no_wrap=True)
    table.add_column("importance", justify="right")
    for name, value in found.items():
        table.add_row(name, f"{value:.3f}")
    Console().print(table)
