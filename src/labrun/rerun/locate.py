"""Where a recorded run's project and config folders are now, on this machine.

A run records its project root, the config folders it searched (relative to that root where
they lay under it) and, per package, where its code came from. A rerun started anywhere finds
the project again through the user's package (importable here: installed, or on PYTHONPATH),
else the project the rerun is started in; the config folders follow the project.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def user_packages(provenance: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The recorded packages that came from a source folder, other than labrun."""
    code = (provenance or {}).get("code") or {}
    return {n: s for n, s in code.items() if n != "labrun" and s.get("source") == "folder"}


def package_project(name: str) -> Path | None:
    """The project that package `name` imports from here, or None where it does not import."""
    from labrun.config.compose import project_root
    from labrun.tracking.code import package_dir

    now = package_dir(name)
    return project_root(now) if now is not None else None


def project_now(provenance: dict[str, Any] | None, root: str) -> Path | None:
    """The recorded project's root (`root` there) here, found through a package that lived in
    it (other than labrun); None where no such package was recorded or is importable now."""
    for name, state in user_packages(provenance).items():
        path = state.get("path") or ""
        inside = bool(root) and (path == root or path.startswith(root.rstrip("/") + "/"))
        if inside and (found := package_project(name)) is not None:
            return found
    return None


def recorded_root(recorded: Any) -> str:
    return str((recorded.config.get("paths") or {}).get("root_dir") or "")


def config_dirs_now(recorded: Any, root: Path) -> list[Path]:
    """The run's config folders, relative ones placed under `root`."""
    dirs = (recorded.provenance or {}).get("config_dirs") or []
    return [Path(d) if Path(d).is_absolute() else root / d for d in dirs]


@contextlib.contextmanager
def located(recorded: Any, config_dirs: list[str]) -> Iterator[Path]:
    """For the duration: `LABRUN_ROOT` at the run's project (where found through its package)
    and its config folders, after any `--config-dir`, on `LABRUN_CONFIG_PATH`. Yields the
    project root used."""
    from labrun.config.compose import project_root
    from labrun.config.search_path import extra_config_dirs
    from labrun.environ import environ

    found = project_now(recorded.provenance, recorded_root(recorded))
    with environ({"LABRUN_ROOT": str(found)} if found is not None else {}):
        root = project_root()
        dirs = [*config_dirs, *(d for d in config_dirs_now(recorded, root) if d.is_dir())]
        with extra_config_dirs(dirs):
            yield root
