"""The code that ran, per package: labrun itself and every package a `_target_` names.

A package installed from a wheel is its version (the freeze has it too). A package from a
source folder (a checkout, an editable install, the user's project) is also the sha256 of each
of its source files, and, where it lies in a git repository, that repository's commit, dirty
flag and diff. A rerun compares each and names the files that changed.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import sys
import sysconfig
from importlib.metadata import PackageNotFoundError, distribution, packages_distributions, version
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

SOURCE_SUFFIXES = {".py", ".pyx", ".pyi", ".c", ".cpp", ".cu", ".h", ".yaml", ".yml", ".json"}
INSTALLED = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib")}


def target_packages(cfg: DictConfig | dict[str, Any]) -> list[str]:
    """Top-level packages the config's `_target_`s name, labrun first, the rest sorted."""
    tree = OmegaConf.to_container(cfg, resolve=False) if isinstance(cfg, DictConfig) else cfg
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            target = node.get("_target_")
            if isinstance(target, str) and target:
                found.add(target.split(".", 1)[0])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(tree)
    found.discard("labrun")
    return ["labrun", *sorted(found)]


def package_dir(name: str) -> Path | None:
    """Where top-level package (or module) `name` is imported from, without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))).resolve()
    return Path(spec.origin).resolve() if spec.origin and spec.origin != "built-in" else None


def is_installed(path: Path) -> bool:
    return any(path.is_relative_to(site) for site in INSTALLED)


def source_files(path: Path) -> dict[str, str]:
    """sha256 of every source file of a package folder (or single module), by relative path."""
    files = [path] if path.is_file() else sorted(path.rglob("*"))
    base = path.parent if path.is_file() else path
    return {
        str(f.relative_to(base)): hashlib.sha256(f.read_bytes()).hexdigest()
        for f in files
        if f.is_file() and f.suffix in SOURCE_SUFFIXES and "__pycache__" not in f.parts
    }


def repo_root(path: Path) -> Path | None:
    from labrun.tracking.git import _git

    top = _git(path if path.is_dir() else path.parent, "rev-parse", "--show-toplevel")
    return Path(top.strip()).resolve() if top else None


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return packages_distributions()  # reads every installed RECORD: ~1 s here, once


def _named_after(name: str) -> str | None:
    """The version of the distribution called `name` when it installs top-level `name`: one
    RECORD read, where finding any other distribution that does means reading them all."""
    try:
        dist = distribution(name)
        record = dist.read_text("RECORD") or ""
    except (PackageNotFoundError, ValueError):
        return None
    top = (f"{name}/", f"{name}.py,")
    return dist.version if any(line.startswith(top) for line in record.splitlines()) else None


def package_version(name: str) -> str | None:
    """The version of the distribution that installs `name`, else the imported module's
    `__version__` (an editable install names no top-level packages)."""
    if found := _named_after(name):
        return found
    for dist in _distributions().get(name, []):
        try:
            return version(dist)
        except Exception:
            continue
    found = getattr(sys.modules.get(name), "__version__", None)
    return str(found) if found else None


def package_state(name: str) -> dict[str, Any]:
    """One package: where it came from, its version, and for source folders its files and git
    state (the diff itself is returned under `diff`, stored apart from provenance.json)."""
    from labrun.tracking.git import git_state

    path = package_dir(name)
    state: dict[str, Any] = {"path": str(path) if path else None, "version": package_version(name)}
    if path is None or is_installed(path):
        state["source"] = "installed" if path else "missing"
        return state
    files = source_files(path)
    state.update(source="folder", files=files, sha256=digest(files))
    if snapshot := snapshot_of(path):  # a sweep's frozen copy: the submitted repository's state
        folder, recorded = snapshot
        state.update(
            snapshot=str(folder), package_in_repo=str(path.relative_to(folder)), **recorded
        )
    elif root := repo_root(path):
        state.update(repo=str(root), package_in_repo=str(path.relative_to(root)), **git_state(root))
    return state


SNAPSHOT_MARKER = "labrun_snapshot.json"  # in a sweep's copy of a repository (sweep.snapshot)


def snapshot_of(path: Path) -> tuple[Path, dict[str, Any]] | None:
    """The snapshot folder holding `path` and the git state it was taken with, else None."""
    for folder in path.parents:
        if (folder / SNAPSHOT_MARKER).is_file():
            return folder, json.loads((folder / SNAPSHOT_MARKER).read_text())
    return None


SNAPSHOT_ENV = "LABRUN_SNAPSHOT"  # in a sweep's jobs: the folder of its code snapshot


def snapshot_git_state(root: Path) -> dict[str, Any] | None:
    """In a job run from a sweep's snapshot: the git state `root`'s repository had when the
    sweep was submitted (the working tree may have changed since), else None."""
    folder = os.environ.get(SNAPSHOT_ENV)
    if not folder:
        return None
    for marker in Path(folder).glob(f"*/{SNAPSHOT_MARKER}"):
        recorded = json.loads(marker.read_text())
        if recorded.get("repo") and Path(recorded["repo"]).resolve() == root.resolve():
            return {
                k: recorded.get(k)
                for k in ("commit", "branch", "remote", "dirty", "diff", "untracked")
            }
    return None


def digest(files: dict[str, str]) -> str:
    return hashlib.sha256(
        "".join(f"{k}\0{v}\n" for k, v in sorted(files.items())).encode()
    ).hexdigest()


def code_state(cfg: DictConfig | dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: package_state(name) for name in target_packages(cfg)}


def tag_value(state: dict[str, Any]) -> str:
    """`<commit12>[+dirty]`, `sha256:<12>` or `<version>`: what a tag can show of a package."""
    if state.get("commit"):
        return state["commit"][:12] + ("+dirty" if state.get("dirty") else "")
    if state.get("sha256"):
        return f"sha256:{state['sha256'][:12]}"
    return state.get("version") or state.get("source", "unknown")
