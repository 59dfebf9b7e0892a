"""An Optuna search over a config (`labrun sweep`); one MLflow parent run, a child per trial.

Optuna is used directly (>= 4): the study lives in a database (SQLite beside the MLflow store by
default), so running the same command again resumes it, and several workers share it.
"""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from labrun.config.compose import compose_task, preflight
from labrun.errors import ConfigError, SweepFailed
from labrun.job.train import train
from labrun.store.places import check_run_places
from labrun.sweep.parent import child_tags, open_parent, summarize
from labrun.sweep.space import check_search, suggest

log = logging.getLogger(__name__)
DONE = ("COMPLETE", "PRUNED", "FAIL")


class OptunaPruning(L.Callback):
    """Reports the objective after each validation; asks the run to stop when Optuna prunes.

    Stopping (rather than raising) lets the run finish and record normally; the sweep then
    marks the trial PRUNED.
    """

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial, self.metric, self.pruned = trial, metric, False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.metric not in trainer.callback_metrics:
            return
        self.trial.report(float(trainer.callback_metrics[self.metric]), trainer.current_epoch)
        if self.trial.should_prune():
            self.pruned = True
            trainer.should_stop = True


def make_study(hs: DictConfig, run_dir: str, direction: str, worker: int = 0) -> Any:
    """The study, created or loaded; each worker's sampler gets its own seed (seed + worker),
    or every worker would propose the same parameters."""
    import optuna

    storage = hs.storage or f"sqlite:///{run_dir}/optuna.db"
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    sampler = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}[
        hs.sampler.type  # checked in check_search
    ]
    if hs.pruner.type == "median":
        pruner: Any = optuna.pruners.MedianPruner(
            n_startup_trials=hs.pruner.n_startup_trials, n_warmup_steps=hs.pruner.n_warmup_steps
        )
    else:
        pruner = optuna.pruners.NopPruner()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=hs.study_name,
        storage=storage,
        direction=direction,
        sampler=sampler(seed=hs.sampler.seed + worker),
        pruner=pruner,
        load_if_exists=True,
    )


def _count(study: Any, states: tuple[str, ...]) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state.name in states)


def run_trials(
    overrides: list[str], base: DictConfig, study: Any, parent: str, sweep_id: str
) -> list[str]:
    """Ask, train, tell, until the study holds n_trials (running ones included). Returns the
    trials that raised, each as 'trial N: error'."""
    from optuna.trial import TrialState

    raised = []
    hs = base.hparams_search
    while _count(study, (*DONE, "RUNNING")) < hs.n_trials:
        trial = study.ask()
        out = Path(base.paths.run_dir) / "sweep" / sweep_id / f"trial_{trial.number:04d}"
        try:
            trial_overrides = suggest(trial, hs.params)
            cfg = compose_task([*overrides, *trial_overrides], str(out))
            pruning = OptunaPruning(trial, base.objective.metric)
            metrics = train(cfg, [pruning], child_tags(parent, sweep_id, trial.number))
        except Exception as exc:  # a failed trial is recorded and the study goes on
            log.error("trial %d failed: %s", trial.number, exc)
            study.tell(trial, state=TrialState.FAIL)
            raised.append(f"trial {trial.number}: {first_line(exc)}")
            continue
        value = metrics.get(base.objective.metric)
        _tag(
            base,
            metrics["run_id"],
            "PRUNED"
            if pruning.pruned
            else ("FAIL" if value is None or math.isnan(value) else "COMPLETE"),
        )
        if pruning.pruned:
            study.tell(trial, state=TrialState.PRUNED)
        elif value is None or math.isnan(value):
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, value)
    return raised


def first_line(exc: BaseException) -> str:
    """An exception's message as the user reads it (a KeyError's str() is quoted)."""
    text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def _tag(base: DictConfig, run_id: str, state: str) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(base.tracking.uri).set_tag(run_id, "labrun.trial_state", state)


def composed_search(overrides: list[str], workers: int, check: bool) -> DictConfig:
    """The sweep's base config; `check` (worker 0: the others start after it checked): the
    preflight, the places it writes and the whole search space first."""
    checked = preflight("train", overrides) if check else None
    base = compose_task(overrides, "unused")
    if not base.get("hparams_search"):
        raise ConfigError(
            "labrun sweep needs a search space: add hparams_search=NAME (conf/hparams_search/)"
        )
    if checked is not None:
        check_run_places(checked)
        check_search(base, overrides, workers)
    return base


def search(overrides: list[str], workers: int = 1, worker: int | None = None) -> dict[str, Any]:
    """Run the search `overrides` name (hparams_search=NAME) to its `n_trials`, with `workers`
    processes sharing the study; `worker` set: be that extra worker, started by worker 0.
    Returns the sweep's summary (worker 0) or an empty dict (other workers)."""
    base = composed_search(overrides, workers, check=worker is None)
    hs = base.hparams_search
    study = make_study(hs, base.paths.run_dir, base.objective.direction, worker or 0)
    sweep_id = hs.study_name
    t = base.tracking
    parent = open_parent(
        t.uri,
        t.experiment,
        t.artifact_root,
        sweep_id,
        "optuna",
        OmegaConf.to_yaml({"overrides": overrides, "hparams_search": hs}),
    )
    if worker is not None:
        if raised := run_trials(overrides, base, study, parent, sweep_id):
            raise SweepFailed(f"sweep {sweep_id} worker {worker}: {'; '.join(raised)}")
        return {}
    from optuna.trial import TrialState

    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        log.warning(
            "trial %d was left running by a process that died: marking it failed", stale.number
        )
        study.tell(stale.number, state=TrialState.FAIL)
    start = time.time()
    # This process is worker 0 and starts training at once; the others start beside it (each
    # new process spends ~5 s importing the stack before its first trial).
    cmd = [sys.executable, "-m", "labrun", "sweep", *overrides]
    procs = [subprocess.Popen([*cmd, f"--worker={i}"]) for i in range(1, workers)]
    try:
        raised = run_trials(overrides, base, study, parent, sweep_id)
    finally:
        codes = [p.wait() for p in procs]
    dead = {i: code for i, code in enumerate(codes, start=1) if code}
    if dead:  # every worker has ended: what is still RUNNING belonged to a dead one
        close_dead_trials(study, t.uri, t.experiment, sweep_id)
    summary = summarize(t.uri, parent, sweep_id, base.objective.metric, base.objective.direction)
    best = summary["best"]
    print(
        f"sweep {sweep_id}: {summary['trials']} trials ({summary['failed']} failed) in "
        f"{time.time() - start:.1f} s; best {base.objective.metric} = "
        f"{best and best[base.objective.metric]} ({best and best['run']}); parent run {parent}"
    )
    if dead or raised:
        fail_parent(
            t.uri,
            parent,
            sweep_id,
            [*raised, *(f"worker {i} exited with {code}" for i, code in dead.items())],
        )
    return summary


def fail_parent(uri: str, parent: str, sweep_id: str, failures: list[str]) -> None:
    """The sweep's parent FAILED with what failed (the first three), and the sweep's line."""
    from mlflow.tracking import MlflowClient

    reason = "; ".join(failures[:3]) + (
        f"; and {len(failures) - 3} more" if len(failures) > 3 else ""
    )
    client = MlflowClient(uri)
    client.set_tag(parent, "labrun.error", reason)
    client.set_terminated(parent, "FAILED")
    raise SweepFailed(f"sweep {sweep_id}: {reason}; parent run {parent} lists its trials")


def close_dead_trials(study: Any, uri: str, experiment: str, sweep_id: str) -> None:
    """Trials a dead worker left RUNNING: FAIL in the study, their runs FAILED (stale)."""
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    from labrun.resume.stale import mark_stale, stale_reason
    from labrun.store.query import search_runs

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        log.warning("trial %d was left running by a worker that died: failed", trial.number)
        study.tell(trial.number, state=TrialState.FAIL)
    client = MlflowClient(uri)
    running = "attributes.status = 'RUNNING'"
    for run in search_runs(client, [experiment], sweep=sweep_id, filter_string=running):
        if reason := stale_reason(run):
            mark_stale(client, run, reason)
