"""Everything needed to tell whether a rerun could reproduce this run."""

from __future__ import annotations

import functools
import hashlib
import json
import platform
import shlex
import socket
import subprocess
import sys
from importlib.metadata import distributions
from pathlib import Path
from typing import Any

import torch

import labrun


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def git_state(root: Path) -> dict[str, Any]:
    """Commit, dirty flag and the diff against it (untracked files listed by name)."""
    commit = _git(root, "rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "diff": "", "untracked": []}
    status = _git(root, "status", "--porcelain", "--untracked-files=all") or ""
    untracked = [line[3:] for line in status.splitlines() if line.startswith("??")]
    return {
        "commit": commit.strip(),
        "dirty": bool(status.strip()),
        "diff": _git(root, "diff", "HEAD") or "",
        "untracked": untracked,
    }


@functools.cache
def pip_freeze() -> tuple[str, ...]:
    """Installed distributions as `name==version`, sorted; the same list `pip freeze` gives."""
    seen = {}
    for dist in distributions():
        name = dist.metadata["Name"]
        if name:
            seen[name.lower()] = f"{name}=={dist.version}"
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
        "git": git_state(root),
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
        "labrun_version": labrun.__version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "packages": pip_freeze(),
    }


def tags(prov: dict[str, Any]) -> dict[str, str]:
    """The searchable part, as MLflow tags (MLflow's own git tag included)."""
    git = prov["git"]
    found = {"mlflow.source.git.commit": git["commit"]} if git["commit"] else {}
    return {
        **found,
        "labrun.git_commit": git["commit"] or "none",
        "labrun.git_dirty": str(git["dirty"]),
        "labrun.seed": str(prov["seed"]),
        "labrun.threads": str(prov["threads"]["intra_op"]),
        "labrun.device": prov["device"],
        "labrun.hostname": prov["hostname"],
        "labrun.version": prov["labrun_version"],
        "labrun.command": prov["command"][:5000],
    }
