"""Hydra multirun as one MLflow parent run: created before the first job, summarised after."""

from __future__ import annotations

import atexit
import logging
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from labrun.sweep.detach import DETACHED_TAG, detach_now, detached
from labrun.sweep.launcher import LAUNCHER
from labrun.sweep.orphans import PID_KEY, runs_jobs_in_processes, stop_on_signal
from labrun.sweep.parent import (
    child_tags,
    open_parent,
    read_parent_file,
    register_tag,
    summarize,
    write_parent_file,
)
from labrun.sweep.resume import (
    ResumeRefused,
    check_drift,
    code_hash,
    kept_trial,
    resumable_parent,
    sweep_key,
)
from labrun.sweep.status import JOBS_TAG, count_jobs

log = logging.getLogger(__name__)


def _tracking(config: DictConfig) -> tuple[str, str, str | None]:
    t = config.tracking
    experiment = config.hydra.runtime.choices.get("experiment") or "default"
    return t.uri, experiment, t.artifact_root


class OneSacctWarning(logging.Filter):
    """submitit polls `sacct` and warns at every poll where the cluster keeps no accounting (the
    one-node cluster of `make slurm`); one warning says it, the rest are dropped."""

    seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "Bypassing sacct error" not in record.getMessage():
            return True
        first, OneSacctWarning.seen = not OneSacctWarning.seen, True
        if first:
            log.warning("sacct fails here (no SLURM accounting): job states come from squeue")
        return False


class MultirunParent(Callback):
    """The parent run's id travels to the jobs in a file in the sweep folder, so jobs in other
    processes (the joblib launcher, a cluster) find it too."""

    # Hydra turns an exception in a callback into a warning and goes on: a sweep without its
    # parent, or a parent never closed. Each hook ends the sweep with its one line instead.
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            # Hydra sets this per job; the parent reads the config before any job, and a
            # `${hydra:...}` in it (tracking.experiment=x-${hydra:runtime.choices.data}) needs it
            HydraConfig.instance().set_config(config)
            self._start(config)
        except Exception as exc:
            self.fail_if_open(say=False)
            _end_sweep(f"the sweep could not open its parent run: {_first_line(exc)}")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            self._end(config)
        except Exception as exc:
            parent = getattr(self, "closing", None)
            if parent is not None:  # closed FAILED with the reason, never left RUNNING
                from mlflow.tracking import MlflowClient

                client = MlflowClient(parent[0])
                client.set_tag(parent[1], "labrun.error", f"summary failed: {_first_line(exc)}")
                client.set_terminated(parent[1], "FAILED")
            _end_sweep(f"the sweep's summary failed: {_first_line(exc)}", 1)

    def _start(self, config: DictConfig) -> None:
        launcher = str(config.hydra.launcher.get("_target_", ""))
        if detached() and launcher != LAUNCHER:
            _end_sweep(
                "--detach needs a cluster to run the jobs: add hydra/launcher=slurm "
                "(local jobs end with this process)"
            )
        sweep_dir = Path(config.hydra.sweep.dir)
        uri, experiment, artifact_root = _tracking(config)
        overrides = list(config.hydra.overrides.task)
        text = OmegaConf.to_yaml(
            {"overrides": overrides, "hydra_overrides": list(config.hydra.overrides.hydra)}
        )
        try:
            sweep_id, tags = self._continued(config, uri, experiment, artifact_root, overrides)
        except ResumeRefused as exc:
            _end_sweep(str(exc))
        if detached():
            tags[DETACHED_TAG] = "1"
        tags.update(
            {
                "labrun.objective": str(config.objective.metric),
                "labrun.direction": str(config.objective.direction),
                "labrun.sweep_dir": str(sweep_dir.resolve()),
                **register_tag(config),
            }
        )
        resumed = sweep_id is not None
        local_jobs = runs_jobs_in_processes(config.hydra.launcher)
        sweep_id = sweep_id or sweep_dir.name
        parent = open_parent(uri, experiment, artifact_root, sweep_id, "multirun", text, tags)
        write_parent_file(
            sweep_dir,
            {
                "run_id": parent,
                "sweep_id": sweep_id,
                "uri": uri,
                "resumed": resumed,
                "detached": detached(),
                **({PID_KEY: os.getpid()} if local_jobs else {}),
            },
        )
        log.info("sweep %s: %sparent run %s", sweep_id, "continued, " if resumed else "", parent)
        # A launcher that fails (a bad hydra.launcher value, Ctrl-C) skips on_multirun_end:
        # the parent is then closed FAILED when the process exits, never left RUNNING.
        self.open_parent: tuple[str, str] | None = (uri, parent)
        atexit.register(self.fail_if_open)
        if local_jobs:
            stop_on_signal(
                lambda signum: self.fail_if_open(
                    reason=f"the sweep process got signal {signum}; its running jobs end KILLED"
                )
            )
        elif launcher == LAUNCHER and not detached():  # SLURM's jobs go on without this process
            stop_on_signal(lambda signum: self.detach(signum, sweep_dir))
        logging.getLogger("submitit").addFilter(OneSacctWarning())

    @staticmethod
    def _continued(
        config: DictConfig, uri: str, experiment: str, artifact_root: str | None, overrides: list
    ) -> tuple[str | None, dict[str, str]]:
        """(the sweep id this command continues or None, the parent's tags)."""
        from mlflow.tracking import MlflowClient

        from labrun.store.client import check_reachable, ensure_experiment
        from labrun.tracking.heartbeat import process_tags

        key, code = sweep_key(experiment, overrides), code_hash(config)
        params = config.hydra.sweeper.get("params")
        params = OmegaConf.to_container(params) if params else {}
        tags = {
            "labrun.sweep_key": key,
            JOBS_TAG: str(count_jobs(overrides, params)),
            **process_tags(),
        }
        check_reachable(uri, 10.0)
        client = MlflowClient(uri)
        exp_id = ensure_experiment(client, experiment, artifact_root)
        previous = resumable_parent(client, exp_id, key)
        if previous is None:
            return None, {**tags, "labrun.sweep_code": code}
        if drift := check_drift(previous, code):
            log.warning("%s: continuing anyway (--allow-drift)", drift)
            tags["labrun.sweep_drift"] = drift
        sweep_id = previous.data.tags["labrun.sweep_id"]
        log.info("sweep %s did not finish (%s): continuing it", sweep_id, previous.info.status)
        return sweep_id, tags

    def detach(self, signum: int, sweep_dir: Path) -> None:
        """Stopped while SLURM runs the jobs: the sweep goes on detached (`detach_now`)."""
        if getattr(self, "open_parent", None) is None:  # summarising: it ends as it does
            return
        (uri, parent), self.open_parent = self.open_parent, None
        detach_now(uri, parent, sweep_dir, signum)

    def fail_if_open(
        self, say: bool = True, reason: str = "the sweep stopped before its jobs ended"
    ) -> None:
        if getattr(self, "open_parent", None) is None:
            return
        from mlflow.tracking import MlflowClient

        uri, parent = self.open_parent
        self.open_parent = None
        client = MlflowClient(uri)
        client.set_tag(parent, "labrun.error", reason)
        client.set_terminated(parent, "FAILED")
        if say:
            print(
                f"labrun: error: {reason}; its parent run {parent} is FAILED",
                file=sys.stderr,
            )

    def _end(self, config: DictConfig) -> None:
        self.closing, self.open_parent = self.open_parent, None  # summarize closes it
        info = read_parent_file(config.hydra.sweep.dir)
        if info is None:
            return
        if info.get("detached"):  # its last job closes it
            print(
                f"sweep {info['sweep_id']} submitted (parent run {info['run_id']}); follow it "
                f"with: labrun sweep status {info['sweep_id']} --wait",
                flush=True,
            )
            return
        objective = config.objective
        summary = summarize(
            info["uri"], info["run_id"], info["sweep_id"], objective.metric, objective.direction
        )
        best = summary["best"]
        log.info(
            "sweep %s: %d trials, %d failed; best %s = %s (%s)",
            info["sweep_id"],
            summary["trials"],
            summary["failed"],
            objective.metric,
            best and best[objective.metric],
            best and best["run"],
        )
        if summary["failed"]:
            # Hydra gives callbacks no way to set the exit code, and this is the last thing the
            # multirun does: the sweep ends here, with its one line, after its parent is closed.
            failed = ", ".join(
                f"{row['trial']} {row['state']}"
                for row in summary["table"]
                if row["state"] != "FINISHED"
            )
            print(
                f"labrun: error: sweep {info['sweep_id']} had failed trials: {failed}; its "
                f"parent run {info['run_id']} lists them",
                file=sys.stderr,
            )
            raise SystemExit(1)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _end_sweep(message: str, code: int = 2) -> NoReturn:
    """The sweep's one line; SystemExit, which Hydra's callback runner lets through."""
    print(f"labrun: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def multirun_tags() -> dict[str, str]:
    """Child-run tags for a job of a Hydra multirun, whose parent `MultirunParent` opened."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return {}
    info = read_parent_file(HydraConfig.get().sweep.dir)
    if info is None:
        return {}
    return child_tags(info["run_id"], info["sweep_id"], HydraConfig.get().job.num)


def kept_job(cfg: DictConfig) -> dict[str, Any] | None:
    """In a resumed multirun: this job's FINISHED run with the same config, if there is one."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    info = read_parent_file(HydraConfig.get().sweep.dir)
    if not info or not info.get("resumed"):
        return None
    return kept_trial(cfg, info["sweep_id"], HydraConfig.get().job.num, info["uri"])


def record_failed_start(cfg: DictConfig, error: BaseException, started_ms: int) -> None:
    """A multirun job that failed before its run opened (its code or data not on the node, a
    value its node refuses): a FAILED run for its trial with the one-line reason, so that the
    parent counts it, `sweep status` shows it and a detached sweep's last job can close it
    (else the trial stays "queued" and the sweep RUNNING for ever). Nothing when the job's
    run opened (since `started_ms`): that run is FAILED already."""
    from hydra.core.hydra_config import HydraConfig
    from mlflow.tracking import MlflowClient

    from labrun.errors import TrackingError
    from labrun.job import ranks
    from labrun.store.client import check_reachable, ensure_experiment
    from labrun.tracking.heartbeat import slurm_tags

    tags = multirun_tags()
    if not tags or not ranks.is_rank_zero() or isinstance(error, TrackingError):
        return  # (the store itself failed: nothing can be written there)
    info = read_parent_file(HydraConfig.get().sweep.dir)
    assert info is not None  # multirun_tags found it
    reason = _first_line(error) or type(error).__name__
    error_tag = {"labrun.error": f"the job failed before training: {reason}"}
    try:
        check_reachable(info["uri"], 10.0)
        client = MlflowClient(info["uri"])
        experiment = ensure_experiment(
            client, str(cfg.tracking.experiment), cfg.tracking.get("artifact_root")
        )
        opened = client.search_runs(
            [experiment],
            f"tags.`labrun.sweep_id` = '{info['sweep_id']}' and "
            f"tags.`labrun.trial` = '{tags['labrun.trial']}' and "
            f"attributes.start_time >= {started_ms}",
        )
        if opened:
            return
        log.error("job %s failed before its run opened: %s", tags["labrun.trial"], reason)
        run = client.create_run(
            experiment,
            run_name=f"{info['sweep_id']}-t{tags['labrun.trial']}",
            tags={**tags, **slurm_tags(), **error_tag},
        )
        client.set_terminated(run.info.run_id, "FAILED")
    except Exception as exc:  # the job's own error is the one to report
        log.warning("could not record the failed job in %s: %s", info["uri"], _first_line(exc))
