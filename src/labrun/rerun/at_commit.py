"""`labrun rerun --at-commit`: the recorded commit plus its recorded diff, in a temporary git
worktree, trained by the code of that tree."""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig

from labrun.errors import LabrunError
from labrun.rerun.fetch import Recorded
from labrun.rerun.overrides import task_overrides

log = logging.getLogger(__name__)


def run_at_commit(recorded: Recorded, env_paths: DictConfig, uri: str, extra: list[str]) -> str:
    """Train with the recorded commit and diff, checked out in a temporary git worktree, and
    return the new run's id. The code there composes the run's own overrides."""
    from labrun.config.compose import project_root

    prov = recorded.provenance or {}
    commit = (prov.get("git") or {}).get("commit")
    if not commit:
        raise LabrunError(f"run '{recorded.run_id}' recorded no git commit; --at-commit needs one")
    if prov["git"].get("diff_redacted"):
        raise LabrunError(
            "the recorded diff had secret values, which were not stored; commit the "
            "change (without the secret) or rerun without --at-commit"
        )
    name = f"rerun-{uuid.uuid4().hex[:12]}"
    with worktree(project_root(), commit, recorded.git_diff) as tree:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(tree / "src"), os.environ.get("PYTHONPATH", "")]),
            "LABRUN_ROOT": str(tree),
            "LABRUN_DATA_DIR": str(env_paths.data_dir),
            "LABRUN_RUN_DIR": str(env_paths.run_dir),
            "MLFLOW_TRACKING_URI": uri,
        }
        overrides = [*task_overrides(recorded), *extra, f"tracking.run_name={name}"]
        command = [sys.executable, "-m", "labrun", recorded.task, *overrides]
        log.info("at commit %s: %s", commit[:12], " ".join(command[2:]))
        done = subprocess.run(command, cwd=tree, env=env)
        if done.returncode:
            raise LabrunError(f"the run at commit {commit[:12]} failed (exit {done.returncode})")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(recorded.experiment)
    found = client.search_runs([exp.experiment_id], f"attributes.run_name = '{name}'")
    if not found:
        raise LabrunError(f"the run at commit {commit[:12]} left no run named {name}")
    return found[0].info.run_id


@contextlib.contextmanager
def worktree(repo: Path, commit: str, diff: str | None) -> Iterator[Path]:
    """`commit` of `repo` checked out in a temporary worktree with `diff` applied; removed
    afterwards whatever happens."""
    with tempfile.TemporaryDirectory(prefix="labrun-rerun-") as tmp:
        tree = Path(tmp) / "tree"
        added = _git(repo, "worktree", "add", "--detach", str(tree), commit)
        if added.returncode:
            last = added.stderr.strip().splitlines()[-1] if added.stderr.strip() else "git"
            raise LabrunError(
                f"cannot check out commit {commit[:12]} from {repo} ({last}); "
                "fetch it first (git fetch) or run without --at-commit"
            )
        try:
            if diff:
                patch = Path(tmp) / "recorded.diff"
                patch.write_text(diff)
                applied = _git(tree, "apply", "--whitespace=nowarn", str(patch))
                if applied.returncode:
                    raise LabrunError(
                        f"the recorded diff does not apply to {commit[:12]}: "
                        f"{applied.stderr.strip().splitlines()[0]}"
                    )
            yield tree
        finally:
            _git(repo, "worktree", "remove", "--force", str(tree))


def _git(where: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True)
