"""labrun: reproducible experiments from Hydra configs, Lightning training and MLflow records.

From a notebook: `labrun.train([...overrides])`, `labrun.evaluate([...])`,
`labrun.rerun(run_id)`, `labrun.runs(...)` and `labrun.compare(...)` (see `labrun.api`); each
keeps the command line's guarantees and raises its one-line errors as `LabrunError`.
"""

from typing import Any

from labrun import environ, moved
from labrun.version import __version__

del environ  # imported first for `environ.AT_START`: the environment before any library
moved.install()  # runs recorded before the rooms were laid out name the old import paths

__all__ = ["__version__", "compare", "evaluate", "rerun", "runs", "train"]


def __getattr__(name: str) -> Any:
    """The notebook functions, imported on first use: `import labrun` stays light."""
    if name in ("train", "evaluate", "runs"):
        from labrun import api

        return getattr(api, name)
    if name in ("compare", "rerun"):  # packages of their own, callable as functions
        import importlib

        return importlib.import_module(f"labrun.{name}")
    raise AttributeError(f"module 'labrun' has no attribute '{name}'")
