"""What the tests share: real data under LABRUN_DATA_DIR, composing as the CLI does, and the
CLI run as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from labrun.config.compose import compose_task, project_root, register_resolvers

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("LABRUN_DATA_DIR", project_root(ROOT) / "data")).resolve()
RECIPES = sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml"))
# A few batches of everything: the whole loop in seconds.
TINY = [
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=4",
    "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=2",
    "~callbacks.progress_bar",
]

register_resolvers()
# Tests never reach the network: a data file found missing is an error, never a download (only
# the loopback servers the download tests start are reached).
os.environ["LABRUN_OFFLINE"] = "1"


def compose_cfg(overrides: list[str], tmp_path: Path, config_name: str = "train") -> DictConfig:
    """Compose as `labrun train` does, with outputs and the store under tmp_path."""
    paths = [f"paths.data_dir={DATA_DIR}", f"paths.run_dir={tmp_path}"]
    return compose_task([*paths, *overrides], f"{tmp_path}/out", config_name)


def labrun_env(tmp_path: Path, store: str | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(LABRUN_DATA_DIR=str(DATA_DIR), LABRUN_RUN_DIR=str(tmp_path / "runs"))
    env.pop("MLFLOW_TRACKING_URI", None)
    if store:
        env["MLFLOW_TRACKING_URI"] = store
    env.update(extra)
    return env


def labrun_command() -> Path:
    """The `labrun` console script of this environment: the command a user types."""
    script = Path(sys.executable).parent / "labrun"
    assert script.is_file(), f"no labrun console script beside {sys.executable}"
    return script


def run_labrun(
    args: list[str],
    env: dict[str, str],
    cwd: Path = ROOT,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """The real `labrun` console script, in its own process."""
    return subprocess.run(
        [str(labrun_command()), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for(event: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.2) -> Any:
    """Poll `event` until it returns something truthy (returned); fail naming `what` after a
    generous `timeout_s`. Tests wait for events, never assert on wall-clock durations."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := event():
            return found
        time.sleep(every_s)
    raise AssertionError(f"gave up after {timeout_s:.0f} s waiting for {what}")


def bare_trainer(**settings: Any) -> Any:
    """A real Lightning Trainer with nothing around its loop: no validation, logger,
    checkpoints, progress bar or summary (`settings`: its limits and callbacks)."""
    import lightning as L

    return L.Trainer(
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **settings,
    )


# A sweep's trials: two short epochs, no model logged.
FAST = [
    "trainer.max_epochs=2",
    "+trainer.limit_train_batches=3",
    "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=2",
    "~callbacks.progress_bar",
    "tracking.log_model=false",
]


def artifact_paths(client: Any, run_id: str, path: str = "") -> set[str]:
    """Every artifact path of a run, recursively."""
    out: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return out


GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "labrun tests",
    "GIT_AUTHOR_EMAIL": "tests@labrun.invalid",
    "GIT_COMMITTER_NAME": "labrun tests",
    "GIT_COMMITTER_EMAIL": "tests@labrun.invalid",
}


def git(repo: Path, *args: str) -> str:
    """git in `repo` as the tests' own identity; fails the test on a non-zero exit."""
    done = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **GIT_IDENTITY},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def new_project(into: Path, name: str) -> Path:
    """`labrun new NAME` (in-process), committed: a user's own repository."""
    from labrun.scaffold.new import new

    for key, value in GIT_IDENTITY.items():
        os.environ.setdefault(key, value)
    project, committed = new(name, into)
    assert committed, "the scaffold was not committed"
    return project


def edit(path: Path, old: str, new: str) -> None:
    """Replace `old` (which must be there) by `new` in a file."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def do_rerun(store: str, *argv: str) -> dict:
    """`labrun rerun ARGV` in this process, against `store`: its result."""
    from labrun.cli import rerun as rerun_cli

    return rerun_cli.rerun(rerun_cli.parse([*argv, "--tracking-uri", store]))
