"""The code a cluster sweep was submitted with, frozen: its jobs run it, not the working tree.

A SLURM job may start hours after `labrun train -m`; by then its author has edited the code.
At submission the source of every package the sweep's config names (labrun among them) that
comes from a source folder is copied into the sweep folder (`code/`: the repository's tracked
and untracked source files, with its commit, dirty flag and diff in `labrun_snapshot.json`), and
the jobs import from there (`PYTHONPATH`). Their provenance then names the submitted commit and
diff, and their files hash as the parent's `snapshot/code.json` says. Installed packages
(wheels) need no copy: an edit cannot reach them.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from labrun.tracking.code import (
    SNAPSHOT_MARKER,
    SOURCE_SUFFIXES,
    package_state,
    target_packages,
)

log = logging.getLogger(__name__)
COPIED = SOURCE_SUFFIXES | {".toml", ".cfg", ".txt"}
MAX_FILE_BYTES = 5 * 2**20  # a large tracked file is data, not code


def _repo_files(repo: Path) -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(repo), "ls-files", "-co", "--exclude-standard", "-z"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [f for f in out.split("\0") if f and Path(f).suffix in COPIED]


def take(sweep_dir: Path, configs: list[DictConfig]) -> dict[str, Any]:
    """Copy the source packages the jobs' configs name into `sweep_dir/code`; what the jobs'
    PYTHONPATH needs and what the parent records ({"pythonpath": [...], "packages": {...}})."""
    into = sweep_dir / "code"
    pythonpath: list[str] = []
    packages: dict[str, Any] = {}
    copied: dict[str, Path] = {}  # repository -> its copy
    names = {"labrun"}.union(*(target_packages(c) for c in configs))
    for name in sorted(names):
        state = package_state(name)
        if state.get("source") != "folder":
            continue
        path = Path(state["path"])
        if repo := state.get("repo"):
            if repo not in copied:
                copied[repo] = into / f"{len(copied)}-{Path(repo).name}"
                for rel in _repo_files(Path(repo)):
                    src = Path(repo) / rel
                    if src.is_file() and src.stat().st_size <= MAX_FILE_BYTES:
                        (copied[repo] / rel).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(src, copied[repo] / rel)
                keep = ("repo", "commit", "dirty", "diff", "untracked")
                marker = {k: state.get(k) for k in keep}
                (copied[repo] / SNAPSHOT_MARKER).write_text(json.dumps(marker))
            entry = copied[repo] / state["package_in_repo"]
        else:  # a folder outside any repository: the package alone
            entry = into / "folders" / name / path.name
            shutil.copytree(path, entry, ignore=shutil.ignore_patterns("__pycache__"))
        pythonpath.append(str(entry.parent))
        packages[name] = {
            "sha256": state["sha256"],
            "commit": state.get("commit"),
            "from": str(path),
        }
    log.info("code snapshot of %s in %s", ", ".join(packages) or "nothing", into)
    return {"pythonpath": list(dict.fromkeys(pythonpath)), "packages": packages}
