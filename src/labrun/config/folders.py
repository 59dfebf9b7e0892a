"""Where things are: labrun's own config and recipe folders, and the project being run."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # src/labrun (or site-packages/labrun)
ROOT_MARKERS = ("pyproject.toml", ".git")


def config_dir() -> Path:
    """The config folder: the one shipped in the wheel, else the source checkout's `conf/`."""
    packaged = PACKAGE_DIR / "conf"
    if packaged.is_dir():
        return packaged
    return PACKAGE_DIR.parent.parent / "conf"


def recipes_dir() -> Path:
    """The recipes (the `experiment` group): shipped in the wheel, else `experiments/`."""
    packaged = PACKAGE_DIR / "experiments"
    if packaged.is_dir():
        return packaged
    return PACKAGE_DIR.parent.parent / "experiments"


def project_root(start: str | os.PathLike[str] | None = None) -> Path:
    """`$LABRUN_ROOT`, else the nearest folder above `start` (the cwd) holding a project marker.

    A user running from a sub-folder of their project gets the project's run folder, and one
    running outside any project gets the current directory.
    """
    if env := os.environ.get("LABRUN_ROOT"):
        return Path(env).resolve()
    here = Path(start or os.getcwd()).resolve()
    for folder in (here, *here.parents):
        if any((folder / marker).exists() for marker in ROOT_MARKERS):
            return folder
    return here
