"""A SLURM job that is about to stop (its time limit near, preempted, requeued by an admin)
continues in the same MLflow run: checkpoint at the next batch end, requeue, and the requeued
job finds its run through its job folder and resumes from that checkpoint exactly.

labrun owns the requeue, not submitit's signal handler nor Lightning's
`SLURMEnvironment(auto_requeue)` (the two are known to fight over the same signal, and both stop
wherever the signal lands, mid-step): labrun stops only at a batch end, with every DDP rank at
the same batch, so the checkpoint is the one `labrun resume` trusts.

- SIGUSR2 (`hydra.launcher.signal_delay_s` before the time limit): checkpoint, close the run
  SCHEDULED, `scontrol requeue` this job; at most `hydra.launcher.max_num_timeout` times, after
  which the run ends FAILED saying so.
- SIGTERM: SLURM requeueing the job itself (preemption, `scontrol requeue`; its restart count
  has gone up) is the same, without a requeue of ours; any other SIGTERM (`scancel`) ends the
  run KILLED as everywhere else.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L

from labrun.tracking.run import Requeued

log = logging.getLogger(__name__)
JOB_RUN_FILE = "labrun_run.json"  # in the job's folder: the run a requeued job continues
WARNING_SIGNAL = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))


def in_slurm_job() -> bool:
    return "SLURM_JOB_ID" in os.environ and os.environ.get("SUBMITIT_EXECUTOR") == "slurm"


def job_id() -> str:
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env:
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env["SLURM_JOB_ID"]


def restarts_now() -> int | None:
    """SLURM's restart count of this job as slurmctld has it now (it goes up the moment the job
    is requeued, while this process still runs the old one)."""
    try:
        out = subprocess.run(
            ["scontrol", "show", "job", os.environ["SLURM_JOB_ID"]],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"\bRestarts=(\d+)", out)
    return int(found.group(1)) if found else None


def requeue_self() -> None:
    """`scontrol requeue` this job; its SIGTERM to this process is then ignored."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    done = subprocess.run(
        ["scontrol", "requeue", os.environ["SLURM_JOB_ID"]], capture_output=True, text=True
    )
    if done.returncode != 0:
        log.error("scontrol requeue failed: %s", done.stderr.strip())


def max_requeues() -> int:
    """`hydra.launcher.max_num_timeout` of the sweep that submitted this job."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return 0
    return int(HydraConfig.get().launcher.get("max_num_timeout", 0) or 0)


def continued_run(cfg: Any) -> str | None:
    """In a requeued SLURM job: the run its folder names, when it is not finished, with
    `cfg.ckpt_path` set to its newest whole checkpoint; else None (a new run)."""
    if not in_slurm_job() or not (run_id := job_run(cfg.paths.output_dir)):
        return None
    from mlflow.tracking import MlflowClient
    from omegaconf import open_dict

    from labrun.errors import LabrunError
    from labrun.resume.checkpoints import newest_checkpoint

    client = MlflowClient(str(cfg.tracking.uri))
    if client.get_run(run_id).info.status == "FINISHED":
        return None
    try:  # a checkpoint only in the store is fetched into the job's own folder
        ckpt = newest_checkpoint(client, run_id, cfg, Path(cfg.paths.output_dir))
    except LabrunError:  # stopped before its first checkpoint: nothing to continue from
        log.warning("run %s has no checkpoint to continue from: starting a new run", run_id)
        if client.get_run(run_id).info.status in ("RUNNING", "SCHEDULED"):  # not left open
            client.set_tag(
                run_id,
                "labrun.error",
                "the SLURM job stopped before its first "
                "checkpoint; its requeued job trains a new run",
            )
            client.set_terminated(run_id, "KILLED")
        return None
    log.info("requeued job %s: continuing run %s from %s", job_id(), run_id, ckpt)
    with open_dict(cfg):
        cfg.ckpt_path = str(ckpt)
    return run_id


def remember_job_run(output_dir: str | Path, run_id: str) -> None:
    """The job folder names its run, for the job's next start (a requeue)."""
    path = Path(output_dir) / JOB_RUN_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"run_id": run_id}))


def job_run(output_dir: str | Path) -> str | None:
    path = Path(output_dir) / JOB_RUN_FILE
    try:
        return str(json.loads(path.read_text())["run_id"])
    except (OSError, ValueError, KeyError):
        return None


def callbacks(run: Any) -> list[L.Callback]:
    """`SlurmRequeue` in a SLURM job, nothing elsewhere."""
    return [SlurmRequeue(run, max_requeues())] if in_slurm_job() else []


class SlurmRequeue(L.Callback):
    """In a SLURM job: SLURM's warning and requeue signals become a checkpoint at the next
    training batch end and a requeue (see the module). Installed on every rank; the ranks
    agree on the batch they stop at (`reduce_boolean_decision`)."""

    def __init__(self, run: Any, max_requeues: int) -> None:
        self.run = run
        self.max_requeues = max_requeues
        self.pending: int | None = None
        self.fitting = False
        self._old: dict[int, Any] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for sig in (WARNING_SIGNAL, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._note)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()

    def _note(self, signum: int, frame: FrameType | None) -> None:
        log.warning("SLURM signal %d: checkpointing at the next batch end", signum)
        if self.pending is None and (self.fitting or signum == WARNING_SIGNAL):
            self.pending = signum  # a warning before the first batch waits for its end
        elif signum == signal.SIGTERM:  # outside training (testing, a second signal): stop
            self.run.signalled(signum)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fitting = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fitting = False
        if self.pending == signal.SIGTERM:  # arrived after the last batch
            self.run.signalled(signal.SIGTERM)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        stop = self.pending is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if not stop:
            return
        signum = trainer.strategy.broadcast(self.pending or signal.SIGTERM)
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        if signum == WARNING_SIGNAL:
            if restarts >= self.max_requeues:
                raise RuntimeError(
                    f"SLURM time limit reached after {restarts} requeue(s), the most "
                    f"hydra.launcher.max_num_timeout={self.max_requeues} allows"
                )
            reason, ours = f"time limit near (SIGUSR2), requeue {restarts + 1}", True
        else:
            now = restarts_now() if trainer.is_global_zero else None
            requeued = trainer.strategy.broadcast(now is not None and now > restarts)
            if not requeued:  # scancel: the run ends KILLED, as for any SIGTERM
                self.fitting = False
                self.run.signalled(signal.SIGTERM)
                self.run.raise_if_signalled()
                return
            reason, ours = f"requeued by SLURM (SIGTERM), restart {restarts + 1}", False
        path = resume_path(trainer)
        trainer.save_checkpoint(path)
        log.warning("checkpoint %s written at step %d: %s", path, trainer.global_step, reason)
        raise Requeued(reason, then=requeue_self if ours and trainer.is_global_zero else None)


def resume_path(trainer: L.Trainer) -> Path:
    """Where `labrun resume` looks first: the ResumeCheckpoint's `resume.ckpt`."""
    from labrun.resume.checkpoints import ResumeCheckpoint

    for cb in trainer.callbacks:
        if isinstance(cb, ResumeCheckpoint) and cb.dirpath:
            return Path(cb.dirpath) / "resume.ckpt"
    return Path(trainer.default_root_dir) / "checkpoints" / "resume.ckpt"
