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

from labrun.config.compose import project_root
from labrun.errors import LabrunError
from labrun.rerun.fetch import Recorded
from labrun.rerun.locate import recorded_root
from labrun.rerun.overrides import task_overrides

log = logging.getLogger(__name__)


def run_at_commit(recorded: Recorded, env_paths: DictConfig, uri: str, extra: list[str]) -> str:
    """Train with each recorded repository (the project's, and any a package of the run came
    from) at its recorded commit plus diff, checked out in temporary worktrees, and return the
    new run's id. The code there composes the run's own overrides."""
    prov = recorded.provenance or {}
    commit = (prov.get("git") or {}).get("commit")
    if not commit:
        raise LabrunError(f"run '{recorded.run_id}' recorded no git commit; --at-commit needs one")
    if prov["git"].get("diff_redacted") or any(
        s.get("diff_redacted") for s in (prov.get("code") or {}).values()
    ):
        raise LabrunError(
            "the recorded diff had secret values, which were not stored; commit the "
            "change (without the secret) or rerun without --at-commit"
        )
    refuse_untracked(prov)
    name = f"rerun-{uuid.uuid4().hex[:12]}"
    with contextlib.ExitStack() as stack:
        root = project_root()
        tree = stack.enter_context(worktree(root, commit, recorded.git_diff))
        paths = [tree / "src"]
        for package, state in (prov.get("code") or {}).items():
            if not (state.get("repo") and state.get("commit") and state.get("package_in_repo")):
                continue
            in_project = Path(state["repo"]) == Path(recorded_root(recorded))
            here = _repo_now(package, state, in_project)
            if here is None or here.resolve() == root.resolve():
                into = tree
            else:
                diff = (recorded.code_diffs or {}).get(package)
                into = stack.enter_context(worktree(here, state["commit"], diff))
            paths.insert(0, (into / state["package_in_repo"]).parent)
        dirs = [
            str(d if d.is_absolute() else tree / d)
            for d in map(Path, prov.get("config_dirs") or [])
        ]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([*map(str, paths), os.environ.get("PYTHONPATH", "")]),
            "LABRUN_ROOT": str(tree),
            "LABRUN_CONFIG_PATH": os.pathsep.join(dirs),
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
    return _run_named(uri, recorded.experiment, name, commit)


def refuse_untracked(prov: dict) -> None:
    """A repository restored from commit + diff lacks the files git did not track; where the
    run had untracked source files there, the rerun could not be the run."""
    from labrun.rerun.drift import CODE_SUFFIXES

    states = [prov.get("git") or {}, *(prov.get("code") or {}).values()]
    for state in states:
        code = [f for f in state.get("untracked") or [] if Path(f).suffix in CODE_SUFFIXES]
        if code and state.get("commit"):
            where = state.get("repo") or "the project"
            raise LabrunError(
                f"the run had untracked source files in {where} ({', '.join(code[:3])}"
                f"{', ...' if len(code) > 3 else ''}), which a commit cannot restore; "
                "rerun without --at-commit"
            )


def _repo_now(package: str, state: dict, is_project: bool) -> Path | None:
    """The repository a package came from, here: where the package imports from now, else
    the recorded folder if it still exists."""
    from labrun.tracking.code import package_dir, repo_root

    if is_project:
        return None
    if (now := package_dir(package)) is not None and (found := repo_root(now)) is not None:
        return found
    recorded = Path(state["repo"])
    return recorded if recorded.is_dir() else None


def _run_named(uri: str, experiment: str, name: str, commit: str) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
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
