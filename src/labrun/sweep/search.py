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
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from labrun.config.compose import compose_task, preflight
from labrun.errors import ConfigError, SweepFailed
from labrun.job.train import train
from labrun.store.places import check_run_places
from labrun.sweep.importance import print_importance, record_importance
from labrun.sweep.orphans import close_stopped, sigterm_raises, stop_workers, why_stopped
from labrun.sweep.parent import child_tags, open_parent, register_tag, summarize
from labrun.sweep.pareto import objectives, print_front, record_pareto, values_of
from labrun.sweep.space import check_search, suggest
from labrun.sweep.status import JOBS_TAG

log = logging.getLogger(__name__)
DONE = ("COMPLETE", "PRUNED", "FAIL")
RETRY_OF = "labrun.retry_of"  # a retried trial's user attribute: the number of the crashed one
JOURNAL = "journal:"  # hparams_search.storage=journal:PATH: Optuna's journal file storage


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


def make_study(hs: DictConfig, run_dir: str, directions: list[str], worker: int = 0) -> Any:
    """The study, created or loaded; each worker's sampler gets its own seed (seed + worker),
    or every worker would propose the same parameters."""
    import optuna

    storage: Any = hs.storage or f"sqlite:///{run_dir}/optuna.db"
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    if str(storage).startswith(JOURNAL):  # a file on a shared filesystem (SQLite there corrupts)
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(str(storage).removeprefix(JOURNAL)).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        storage = JournalStorage(JournalFileBackend(str(path)))
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
        directions=directions,
        sampler=sampler(seed=hs.sampler.seed + worker),
        pruner=pruner,
        load_if_exists=True,
    )


def _count(study: Any, states: tuple[str, ...]) -> int:
    """Trials in `states`, a crashed trial that is retried not counted (its retry is)."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(RETRY_OF) for t in trials} - {None}
    return sum(1 for t in trials if t.state.name in states and t.number not in retried)


def run_trials(
    overrides: list[str], base: DictConfig, study: Any, parent: str, sweep_id: str
) -> list[str]:
    """Ask, train, tell, until the study holds n_trials (running ones included). Returns the
    trials that raised, each as 'trial N: error'."""
    from optuna.trial import TrialState

    raised = []
    hs = base.hparams_search
    wanted = objectives(base)
    deadline = time.time() + hs.timeout if hs.get("timeout") else math.inf
    while _count(study, (*DONE, "RUNNING")) < hs.n_trials:
        if time.time() >= deadline:  # a trial under way finishes; no new one starts
            log.warning(
                "hparams_search.timeout (%s s) reached after %d trials: no new trial starts",
                hs.timeout,
                _count(study, DONE),
            )
            break
        trial = study.ask()
        out = Path(base.paths.run_dir) / "sweep" / sweep_id / f"trial_{trial.number:04d}"
        try:
            trial_overrides = suggest(trial, hs.params)
            cfg = compose_task([*overrides, *trial_overrides], str(out))
            pruning = OptunaPruning(trial, base.objective.metric)
            hooks = [pruning] if len(wanted) == 1 else []  # Optuna prunes one objective only
            metrics = train(cfg, hooks, child_tags(parent, sweep_id, trial.number))
        except Exception as exc:  # a failed trial is recorded and the study goes on
            log.error("trial %d failed: %s", trial.number, exc)
            study.tell(trial, state=TrialState.FAIL)
            raised.append(f"trial {trial.number}: {first_line(exc)}")
            continue
        if len(wanted) > 1:
            tell_values(base, study, trial, metrics["run_id"], wanted)
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


def tell_values(
    base: DictConfig, study: Any, trial: Any, run_id: str, wanted: list[tuple[str, str]]
) -> None:
    """A multi-objective trial's values, read from its run (a metric such as `model/params`
    is logged beside the ones training returns); a missing or NaN one fails the trial."""
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    values = values_of(MlflowClient(base.tracking.uri).get_run(run_id).data.metrics, wanted)
    _tag(base, run_id, "FAIL" if values is None else "COMPLETE")
    if values is None:
        study.tell(trial, state=TrialState.FAIL)
    else:
        study.tell(trial, values)


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
    wanted = objectives(base)
    study = make_study(hs, base.paths.run_dir, [d for _, d in wanted], worker or 0)
    sweep_id = hs.study_name
    t = base.tracking
    parent = open_parent(
        t.uri,
        t.experiment,
        t.artifact_root,
        sweep_id,
        "optuna",
        OmegaConf.to_yaml({"overrides": overrides, "hparams_search": hs}),
        {JOBS_TAG: str(hs.n_trials), **register_tag(base)},
    )
    if worker is not None:
        if raised := run_trials(overrides, base, study, parent, sweep_id):
            raise SweepFailed(f"sweep {sweep_id} worker {worker}: {'; '.join(raised)}")
        return {}
    close_dead_trials(study, t.uri, t.experiment, sweep_id)  # a crashed search, resumed
    start = time.time()
    # This process is worker 0 and starts training at once; the others start beside it (each
    # new process spends ~5 s importing the stack before its first trial).
    cmd = [sys.executable, "-m", "labrun", "sweep", *overrides]
    if launcher := slurm_launcher(overrides):  # every worker a SLURM job; this one waits
        folder = Path(base.paths.run_dir) / "sweep" / sweep_id / time.strftime("%Y%m%d-%H%M%S")
        raised, codes = [], workers_on_slurm(launcher, cmd, workers, folder, base)
    else:
        raised, codes = workers_here(cmd, workers, overrides, base, study, parent)
    dead = {i: code for i, code in enumerate(codes, start=1) if code}
    if dead:  # every worker has ended: what is still RUNNING belonged to a dead one
        close_dead_trials(study, t.uri, t.experiment, sweep_id)
    summary = summarize_search(base, parent, study, wanted)
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


def workers_here(
    cmd: list[str], workers: int, overrides: list[str], base: DictConfig, study: Any, parent: str
) -> tuple[list[str], list[int]]:
    """This process is worker 0; the others run beside it as processes. Stopped (a signal,
    Ctrl-C, a crash), it stops them too and closes the parent FAILED, so nothing trains on
    unwatched. Returns (trials that raised, the other workers' exit codes)."""
    sweep_id, uri = base.hparams_search.study_name, base.tracking.uri
    procs = [subprocess.Popen([*cmd, f"--worker={i}"]) for i in range(1, workers)]
    try:
        with sigterm_raises():  # waiting for the others too: a stop then stops them as well
            raised = run_trials(overrides, base, study, parent, sweep_id)
            codes = [p.wait() for p in procs]
    except BaseException as exc:
        stop_workers(procs)
        for proc in procs:
            proc.wait()
        try:
            close_stopped(uri, parent, sweep_id, why_stopped(exc))
        except Exception as lost:  # the store itself may be what failed: its error stands
            log.warning("sweep %s: its parent run was not closed: %s", sweep_id, lost)
        raise
    return raised, codes


def summarize_search(
    base: DictConfig, parent: str, study: Any, wanted: list[tuple[str, str]]
) -> dict[str, Any]:
    """The sweep's summary on its parent, then what only a search has: each parameter's
    importance and, with several objectives, the Pareto front; both printed too."""
    t, metric = base.tracking, base.objective.metric
    sweep_id = base.hparams_search.study_name
    summary = summarize(t.uri, parent, sweep_id, metric, base.objective.direction)
    if found := record_importance(MlflowClient(t.uri), parent, study, metric):
        print_importance(found, metric)
    summary["importance"] = found
    if len(wanted) > 1:
        trial_runs = {row["trial"]: row["run_id"] for row in summary["table"]}
        summary["pareto"] = record_pareto(MlflowClient(t.uri), parent, study, wanted, trial_runs)
        print_front(summary["pareto"], wanted)
    return summary


def slurm_launcher(overrides: list[str]) -> dict[str, Any] | None:
    """`hydra/launcher=slurm` among a search's overrides: its launcher config, else None."""
    from hydra.core.hydra_config import HydraConfig

    from labrun.config.compose import compose
    from labrun.sweep.launcher import LAUNCHER

    cfg = compose("train", [*overrides, "paths.output_dir=unused"], return_hydra_config=True)
    if str(cfg.hydra.launcher.get("_target_", "")) != LAUNCHER:
        return None
    HydraConfig.instance().set_config(cfg)  # its ${hydra:...} values
    return OmegaConf.to_container(cfg.hydra.launcher, resolve=True)  # type: ignore[return-value]


def workers_on_slurm(
    launcher: dict[str, Any], cmd: list[str], workers: int, folder: Path, base: DictConfig
) -> list[int]:
    """The search's `workers` as SLURM jobs (`labrun sweep ... --worker=i`, the code frozen at
    submission); waited for, their exit codes."""
    import submitit

    from labrun.sweep.launcher import freeze_code, slurm_executor

    folder.mkdir(parents=True, exist_ok=True)
    if not str(base.hparams_search.storage or "").startswith((JOURNAL, "postgresql")):
        log.warning(
            "the study is in SQLite: on a cluster whose nodes share a network filesystem use "
            "hparams_search.storage=journal:PATH (or a PostgreSQL URL)"
        )
    executor = slurm_executor(
        {**launcher, "submitit_folder": str(folder / ".submitit" / "%j")},
        freeze_code(folder, [base]),
    )
    jobs = [
        executor.submit(submitit.helpers.CommandFunction([*cmd, f"--worker={i}"]))
        for i in range(1, workers + 1)
    ]
    log.info("search workers as SLURM jobs: %s", ", ".join(j.job_id for j in jobs))
    codes = []
    for job in jobs:
        try:
            job.result()
            codes.append(0)
        except Exception as exc:  # the worker's trials are closed as a dead worker's
            log.error("search worker job %s failed: %s", job.job_id, worker_reason(job, exc))
            codes.append(1)
    return codes


def worker_reason(job: Any, exc: BaseException) -> str:
    """Why a worker's SLURM job failed, as its own stderr says it: slurmstepd's line, else the
    worker's `labrun: error:` line, else its last line (submitit's first line says only
    "Job (task=0) failed during processing with trace:")."""
    from labrun.sweep.slurm_jobs import log_reason

    err = Path(job.paths.stderr)
    text = err.read_text(errors="replace") if err.is_file() else ""
    if text and (reason := log_reason([err])):
        return reason
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    said = [line for line in lines if line.startswith("labrun: error:")]
    return (said or lines or [first_line(exc)])[-1]


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
    """Trials a dead or stopped process left RUNNING: FAIL in the study and retried with the
    same parameters (enqueued: the next trial asked for, now or when the search is run again);
    their runs FAILED (stale) or KILLED, and set aside for the retry's."""
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    from labrun.resume.stale import mark_stale, stale_reason
    from labrun.store.query import search_runs

    dead = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in dead:
        log.warning(
            "trial %d was left running by a process that died: failed, and retried with its "
            "parameters",
            trial.number,
        )
        study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number})
        study.tell(trial.number, state=TrialState.FAIL)
    numbers = {str(t.number) for t in dead}
    client = MlflowClient(uri)
    for run in search_runs(client, [experiment], sweep=sweep_id):
        if run.info.status == "RUNNING" and (reason := stale_reason(run)):
            mark_stale(client, run, reason)
        elif run.info.status != "KILLED":  # a stopped search's trials: KILLED, not stale
            continue
        if run.data.tags.get("labrun.trial") in numbers:
            client.set_tag(run.info.run_id, "labrun.superseded", "its trial was retried")
