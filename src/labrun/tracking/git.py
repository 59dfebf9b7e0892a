"""A folder's git state: what a run records of each repository its code came from."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any


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
        return {
            "commit": None,
            "branch": None,
            "remote": None,
            "dirty": None,
            "diff": "",
            "untracked": [],
        }
    status = _git(root, "status", "--porcelain", "--untracked-files=all") or ""
    untracked = [line[3:] for line in status.splitlines() if line.startswith("??")]
    branch = (_git(root, "rev-parse", "--abbrev-ref", "HEAD") or "").strip()
    remote = (_git(root, "config", "--get", "remote.origin.url") or "").strip()
    return {
        "commit": commit.strip(),
        "branch": None if branch in ("", "HEAD") else branch,  # HEAD: detached
        "remote": remote or None,
        "dirty": bool(status.strip()),
        "diff": _git(root, "diff", "HEAD") or "",
        "untracked": untracked,
    }
