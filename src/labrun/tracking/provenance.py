"""Everything needed to tell whether a rerun could reproduce this run."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shlex
import socket
import sys
from importlib.metadata import distributions
from pathlib import Path
from typing import Any

import torch

from labrun.tracking.code import snapshot_git_state, tag_value
from labrun.tracking.git import _git, git_state

__all__ = ["_git", "collect", "git_state", "pip_freeze", "tags"]
from labrun.version import __version__ as labrun_version


@functools.cache
def pip_freeze() -> tuple[str, ...]:
    """Installed distributions as `name==version`, sorted; the same list `pip freeze` gives.
    Where one is installed twice on `sys.path`, the first is the one that imports."""
    seen: dict[str, str] = {}
    for dist in distributions():
        name = dist.metadata["Name"]
        if name:
            seen.setdefault(name.lower(), f"{name}=={dist.version}")
    return tuple(seen[k] for k in sorted(seen))


def data_digest(fingerprint: dict[str, str]) -> str:
    """One sha256 over the per-file digests, independent of read order."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


def cpu_model() -> str:
    """The CPU's model name: two CPUs may pick different kernels and change the last bits."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device() -> str:
    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    return "cpu"


def collect(root: Path, seed: int, threads: int) -> dict[str, Any]:
    return {
        "git": snapshot_git_state(root) or git_state(root),
        "seed": seed,
        "threads": {
            "intra_op": torch.get_num_threads(),
            "inter_op": torch.get_num_interop_threads(),
            "configured": threads,
        },
        "device": device(),
        "cpu": cpu_model(),
        "machine": platform.machine(),
        "hostname": socket.gethostname(),
        "command": shlex.join(sys.argv),
        "labrun_version": labrun_version,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "packages": pip_freeze(),
    }


def command_words(argv: list[str] | None = None) -> list[str]:
    """The command as typed: `labrun train ...` (the CLI names Hydra's program "labrun train")."""
    argv = sys.argv if argv is None else argv
    return [*Path(argv[0]).name.split(), *argv[1:]] if argv else []


def mlflow_source(argv: list[str] | None = None) -> dict[str, str]:
    """MLflow's own "Created by" and "Source" (its fluent API sets them; labrun's client does
    not): the user, and the labrun verb that made the run."""
    import getpass

    words = command_words(argv)
    verb = " ".join(words[:2]) if words[:1] == ["labrun"] else (words[:1] or ["labrun"])[0]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a uid without a passwd entry (some containers)
        user = str(os.getuid())
    return {"mlflow.user": user, "mlflow.source.type": "LOCAL", "mlflow.source.name": verb}


def tags(prov: dict[str, Any]) -> dict[str, str]:
    """The searchable part, as MLflow tags (MLflow's own git tag included)."""
    git = prov["git"]
    found = {
        key: value
        for key, value in (
            ("mlflow.source.git.commit", git["commit"]),
            ("mlflow.source.git.branch", git.get("branch")),
            ("mlflow.source.git.repoURL", git.get("remote")),
        )
        if value
    }
    return {
        **mlflow_source(),
        **found,
        "labrun.git_commit": git["commit"] or "none",
        "labrun.git_dirty": str(git["dirty"]),
        "labrun.seed": str(prov["seed"]),
        "labrun.threads": str(prov["threads"]["intra_op"]),
        "labrun.device": prov["device"],
        "labrun.hostname": prov["hostname"],
        "labrun.version": prov["labrun_version"],
        "labrun.command": prov["command"][:5000],
        **{f"labrun.code.{name}": tag_value(state) for name, state in prov.get("code", {}).items()},
        **(
            {"labrun.config_dirs": ",".join(prov["config_dirs"])} if prov.get("config_dirs") else {}
        ),
    }
