"""Why a search worker's SLURM job failed, as the sweep says it: read from the job's own stderr
file where submitit's error names only "failed during processing"."""

from __future__ import annotations

from pathlib import Path

import submitit

from labrun.sweep.search import worker_reason

SUBMITIT_SAYS = RuntimeError("Job (task=0) failed during processing with trace:\n----\n...")


def job_with_stderr(tmp_path: Path, text: str | None) -> submitit.SlurmJob:
    job = submitit.SlurmJob(tmp_path / "%j", "42")
    if text is not None:
        job.paths.stderr.parent.mkdir(parents=True)
        job.paths.stderr.write_text(text)
    return job


def test_the_workers_own_error_line_is_the_reason(tmp_path: Path) -> None:
    text = "[INFO] - training\nTraceback (most recent call last):\n  ...\n"
    text += "labrun: error: the tracking store failed: database is locked\n\n"
    job = job_with_stderr(tmp_path, text)
    assert worker_reason(job, SUBMITIT_SAYS) == (
        "labrun: error: the tracking store failed: database is locked"
    )


def test_slurmstepd_says_why_it_stopped_the_job(tmp_path: Path) -> None:
    text = "labrun: error: killed\nslurmstepd: error: StepId=42.0 exceeded memory limit "
    text += "(7000000000 > 6442450944), being killed\n"
    assert worker_reason(job_with_stderr(tmp_path, text), SUBMITIT_SAYS) == (
        "exceeded memory limit (7000000000 > 6442450944), being killed"
    )


def test_without_a_log_the_last_line_or_submitits_word(tmp_path: Path) -> None:
    assert worker_reason(job_with_stderr(tmp_path, "a\nKilled\n"), SUBMITIT_SAYS) == "Killed"
    assert worker_reason(job_with_stderr(tmp_path / "none", None), SUBMITIT_SAYS) == (
        "Job (task=0) failed during processing with trace:"
    )
