"""MLflow's model registry: a run's logged model, or the best trial's of a sweep, as a new
version of a registered model with an alias (`labrun register`, `tracking.register_as`), so
`mlflow.pytorch.load_model("models:/NAME@best")` loads it."""

from __future__ import annotations

import re
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from labrun.errors import LabrunError
from labrun.store.client import get_run
from labrun.store.query import find_sweep_parent

MODEL_TAG = "labrun.model_id"  # set on a run by tracking.record.log_model
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def model_of(client: MlflowClient, run_or_sweep: str) -> tuple[Any, str]:
    """(the run, its logged model's id): the run named, or the best trial of the sweep named
    (by its parent's run id or its sweep id); one line when there is none."""
    parent = find_sweep_parent(client, run_or_sweep)
    if parent is not None:
        best = parent.data.tags.get("labrun.best_run")
        if not best:
            raise LabrunError(
                f"sweep {run_or_sweep} has no best trial (none finished with its objective); "
                "register one of its trials by its run id"
            )
        run_or_sweep = best
    run = get_run(client, run_or_sweep)
    model_id = run.data.tags.get(MODEL_TAG)
    if not model_id:
        found = client.search_logged_models(
            [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
        )
        model_id = found[0].model_id if found else None
    if not model_id:
        raise LabrunError(
            f"run {run.info.run_id} logged no model (it ran with tracking.log_model=false, or "
            "before labrun logged models); train it again with tracking.log_model=true"
        )
    return run, model_id


def register(client: MlflowClient, run_or_sweep: str, name: str, alias: str = "best") -> Any:
    """A new version of registered model `name` from the run's (or sweep's best) model,
    `alias` pointed at it; the version."""
    if not NAME.match(name):
        raise LabrunError(
            f"'{name}' cannot name a registered model: use letters, digits, '_', '-', '.'"
        )
    if not ALIAS.match(alias) or re.fullmatch(r"[vV]\d+|latest", alias):
        raise LabrunError(
            f"'{alias}' cannot be an alias: letters, digits, '_', '-', not 'latest' or 'v<N>'"
        )
    run, model_id = model_of(client, run_or_sweep)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description=f"Registered by labrun from experiment run {run.info.run_id}."
        )
    version = client.create_model_version(
        name, source=f"models:/{model_id}", run_id=run.info.run_id, model_id=model_id
    )
    client.set_registered_model_alias(name, alias, version.version)
    return version
