"""Hydra plugin: Hydra's submitit SLURM launcher, as a sweep needs it on a real cluster
(`hydra/launcher=slurm`; the helpers live in `labrun.sweep.launcher`).

- Every job's config is composed at submission and the code frozen (`labrun.sweep.snapshot`):
  edits made after `labrun train -m` never reach a job that starts later.
- A job that ends without a result (killed for memory, cancelled, its node lost) is one line
  and a failed trial; the other jobs are still waited for and the sweep is summarised (Hydra's
  launcher raises at the first such job, leaving the others unwatched).
- `--detach` (`LABRUN_DETACH=1`): submit every job and return at once; the jobs close the
  sweep themselves (`labrun.sweep.detach`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)
POLL_S = 5.0  # one sacct call for the whole sweep this often


def wait_all(jobs: Sequence[Any]) -> None:
    """Until every job has ended. submitit's own wait asks sacct less and less often (every
    10 minutes at most), so a job killed late in a long sweep went unnoticed for minutes:
    here one sacct call for all the jobs every `POLL_S`, and result files seen at once."""
    import time

    pending = list(jobs)
    unknown = 0  # sacct calls that knew none of the jobs: 3 means no accounting here
    while pending:
        if unknown < 3:
            watcher = pending[0].watcher
            watcher.update()
            known = any(job.job_id in watcher._info_dict for job in pending)
            unknown = 0 if known else unknown + 1
        pending = [job for job in pending if not job.done()]
        if pending:
            time.sleep(POLL_S)


class LabrunSlurmLauncher(SlurmLauncher):
    def submit(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[Any]:
        """Every job submitted as one SLURM array (as Hydra's launcher does); the submitit jobs."""
        from labrun.sweep.launcher import freeze_code, slurm_executor

        assert self.config is not None and self.hydra_context is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info("SLURM sweep folder: %s", sweep_dir)
        # Composed now, not in the job: a config edited after submission cannot reach a job.
        configs = [
            self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            for overrides in job_overrides
        ]
        executor = slurm_executor(self.params, freeze_code(sweep_dir, configs))
        job_params = []
        for idx, (overrides, config) in enumerate(
            zip(job_overrides, configs, strict=True), start=initial_job_idx
        ):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            job_params.append(
                (config, "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state())
            )
        return executor.map_array(self, *zip(*job_params, strict=True))

    def __call__(  # type: ignore[override]
        self,
        sweep_config: DictConfig,
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict[type, Singleton],
    ) -> JobReturn:
        """In the SLURM job: the config composed at submission, run as Hydra runs a job."""
        import submitit

        assert self.hydra_context is not None and self.task_function is not None
        Singleton.set_state(singleton_state)
        setup_globals()
        with open_dict(sweep_config.hydra.job) as job:
            job.id = submitit.JobEnvironment().job_id
            sweep_config.hydra.job.num = job_num
        return run_job(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=sweep_config,
            job_dir_key=job_dir_key,
            job_subdir_key="hydra.sweep.subdir",
        )

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from labrun.sweep.detach import detached  # Hydra imports every plugin at start: lazily

        jobs = self.submit(job_overrides, initial_job_idx)
        if detached():
            log.info(
                "submitted %d SLURM jobs (%s); not waiting (--detach)",
                len(jobs),
                jobs[0].job_id.split("_")[0] if jobs else "-",
            )
            return []
        wait_all(jobs)
        returns = []
        for idx, job in enumerate(jobs, start=initial_job_idx):
            try:
                returns.append(job.results()[0])
            except Exception as exc:  # the job died: its run is closed from SLURM's account
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                log.error(
                    "job #%d (SLURM job %s) ended without a result: %s", idx, job.job_id, first
                )
                failed = JobReturn()
                failed.status = JobStatus.COMPLETED  # Hydra would raise; the parent counts it
                failed.return_value = None
                returns.append(failed)
        return returns
