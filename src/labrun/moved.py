"""Import paths that moved, still importable: stored runs name them.

A run recorded before labrun's rooms were laid out names `labrun.callbacks.ResumeCheckpoint` in
its stored config, and `labrun rerun`, `labrun resume` and `labrun eval run_id=` import what it
names. Each old module is a stand-in whose names resolve, on first use, to their new homes, so
the old files need not stay in the tree.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
from typing import Any

# old dotted name -> new dotted name, for every name a stored config or user code could name
MOVED: dict[str, str] = {
    "labrun.callbacks.SampleGrid": "labrun.job.callbacks.SampleGrid",
    "labrun.callbacks.ResumeCheckpoint": "labrun.resume.checkpoints.ResumeCheckpoint",
    "labrun.tracking.multirun.MultirunParent": "labrun.sweep.multirun.MultirunParent",
}
OLD_MODULES = {name.rpartition(".")[0] for name in MOVED}


def resolve(name: str) -> Any:
    module, _, attr = MOVED[name].rpartition(".")
    return getattr(importlib.import_module(module), attr)


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in OLD_MODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: Any) -> types.ModuleType:
        module = types.ModuleType(spec.name, f"moved: see labrun.moved ({spec.name})")

        def __getattr__(attr: str) -> Any:
            if f"{spec.name}.{attr}" in MOVED:
                return resolve(f"{spec.name}.{attr}")
            raise AttributeError(f"module '{spec.name}' has no attribute '{attr}'")

        module.__getattr__ = __getattr__  # type: ignore[method-assign]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def install() -> None:
    """Serve the old module names (idempotent)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
