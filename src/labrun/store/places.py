"""Where a run will write (tracking store, artifact root, run folder), checked before it opens.

No network and no MLflow import: a URI MLflow cannot use, a store path under a file, a file
that is not SQLite or a read-only folder is one line in the time composing takes, instead of a
SQLAlchemy traceback after the stack has loaded. Nothing is created here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from labrun.errors import TrackingError

# What this MLflow opens as a tracking store (a `+driver` suffix is fine: postgresql+psycopg2).
SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file", "databricks")
SQLITE_HEADER = b"SQLite format 3\x00"
FIX = "point tracking.uri (or MLFLOW_TRACKING_URI) at"


def check_run_places(cfg: Any, writes: bool = True) -> None:
    """`check_places` for a composed train/eval config (its store, artifacts and run folder);
    not `writes` (`--cfg` only prints): only that the store URI is one MLflow can open."""
    tracking = cfg.tracking
    if not writes:
        check_store_kind(str(tracking.uri))
        return
    check_places(str(tracking.uri), tracking.get("artifact_root"), cfg.paths.get("run_dir"))


def check_places(uri: str, artifact_root: str | None, run_dir: str | None) -> None:
    """Every place a run writes is usable, or a `TrackingError` naming it and the fix."""
    if run_dir:
        check_writable_folder(
            Path(run_dir),
            f"the run folder {run_dir}",
            "point LABRUN_RUN_DIR (or paths.run_dir) at a writable folder",
        )
    check_store_uri(uri)
    if artifact_root and "://" not in artifact_root:
        check_writable_folder(
            Path(artifact_root),
            f"the artifact folder {artifact_root}",
            "point tracking.artifact_root at a writable folder",
        )


def store_scheme(uri: str) -> str:
    """The store's kind, without a driver: postgresql+psycopg2://... -> postgresql."""
    return uri.split("://", 1)[0].split("+", 1)[0].lower()


def check_store_kind(uri: str) -> None:
    """A URI of a kind MLflow opens as a tracking store (from its text alone)."""
    kinds = "sqlite:///PATH/mlflow.db, http://HOST:PORT or postgresql+psycopg2://USER@HOST/DB"
    if "://" not in uri and uri != "databricks":
        raise TrackingError(
            f"tracking URI '{uri}' is a plain path (MLflow's retired file store); {FIX} {kinds}"
        )
    scheme = store_scheme(uri)
    if scheme not in SCHEMES:
        raise TrackingError(f"unknown tracking URI scheme '{scheme}' in {uri}; {FIX} {kinds}")


def check_store_uri(uri: str, write: bool = True) -> None:
    """A URI MLflow opens as a tracking store; `write`: one a run can be written to."""
    check_store_kind(uri)
    scheme = store_scheme(uri)
    if scheme == "sqlite" and uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        check_sqlite_file(Path(uri.removeprefix("sqlite:///").split("?", 1)[0]), uri, write)


def check_sqlite_file(path: Path, uri: str, write: bool = True) -> None:
    if path.is_dir():
        raise TrackingError(f"the tracking store {uri} is a folder; {FIX} a file in it")
    if not path.exists():  # MLflow makes it (and labrun its folder)
        check_writable_folder(path.parent, f"the tracking store {uri}", f"{FIX} a writable place")
        return
    with path.open("rb") as f:
        head = f.read(len(SQLITE_HEADER))
    if head and head != SQLITE_HEADER:
        raise TrackingError(
            f"the tracking store {path} is not an SQLite database (corrupt, or another file); "
            f"move it aside or {FIX} another file"
        )
    for place in (path, path.parent) if write else ():  # SQLite's journal goes beside it
        if not os.access(place, os.W_OK):
            raise TrackingError(
                f"the tracking store {uri} cannot be written: {place} {why_not_writable(place)}; "
                f"make it writable or {FIX} a writable file"
            )


def check_writable_folder(folder: Path, what: str, fix: str) -> None:
    """`folder`, or the nearest folder above it that exists (it will be made), is writable."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise TrackingError(f"{what} lies under {existing}, which is a file, not a folder; {fix}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise TrackingError(
            f"{what} cannot be written: {existing} {why_not_writable(existing)}; {fix}"
        )


def why_not_writable(path: Path) -> str:
    """'is on a read-only file system' or 'is not writable by this user', as access(2) tells."""
    try:
        read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    return "is on a read-only file system" if read_only else "is not writable by this user"
