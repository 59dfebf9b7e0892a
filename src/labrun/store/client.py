"""Reaching the tracking store: which one, whether it answers, and one way to fetch a run."""

from __future__ import annotations

import fcntl
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from labrun.errors import TrackingError
from labrun.store.places import check_store_uri, store_scheme

# MLflow retries an unreachable server for minutes by default; fail within seconds instead.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per file read


def default_uri() -> str:
    """`$MLFLOW_TRACKING_URI`, else the project's embedded store (what `labrun train` uses)."""
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        return uri
    from labrun.config.compose import project_root

    run_dir = os.environ.get("LABRUN_RUN_DIR") or str(project_root() / "runs")
    return f"sqlite:///{Path(run_dir).resolve()}/mlflow.db"


def check_reachable(uri: str, timeout_s: float) -> None:
    """Fail in seconds, with the fix, instead of MLflow's minutes of retries (or a SQLAlchemy
    traceback for a store MLflow cannot open)."""
    check_store_uri(uri, write=False)  # a run's writes were checked in its preflight
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s):
                return
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TrackingError(
                f"cannot reach the tracking server at {uri} ({reason}); start it, "
                "or point tracking.uri / MLFLOW_TRACKING_URI at a running one"
            ) from None
    elif uri.startswith("sqlite:///"):
        open_sqlite_store(uri)
    elif store_scheme(uri) == "postgresql":
        open_postgresql_store(uri, timeout_s)


def open_sqlite_store(uri: str) -> None:
    """Open (create and migrate, if new) a SQLite store with a lock held beside it. Jobs that
    start together on a new store would each create and migrate its tables, and all but one
    fail on the half-made schema ("table _alembic_tmp_tags already exists"). MLflow keeps
    the opened store per process, so after the first call this only takes and drops the lock."""
    from mlflow.tracking._tracking_service.utils import _get_store

    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        _get_store(uri)


# pg_advisory_lock's key: a labrun job is opening (creating or migrating) this database's store
MIGRATION_LOCK = int.from_bytes(b"labrun", "big")


def open_postgresql_store(uri: str, timeout_s: float) -> None:
    """Open (create and migrate, if new) a PostgreSQL store under a session advisory lock:
    the SQLite race again, in a database that has no file to lock beside it. The lock lives in
    the database and goes with the connection, so a killed job cannot leave it held."""
    import sqlalchemy
    from mlflow.tracking._tracking_service.utils import _get_store
    from sqlalchemy.pool import NullPool

    url = sqlalchemy.engine.make_url(uri)
    wait = {"connect_timeout": max(1, round(timeout_s))}  # libpq takes whole seconds
    try:
        engine = sqlalchemy.create_engine(url, connect_args=wait, poolclass=NullPool)
    except ImportError as exc:  # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3
        raise TrackingError(
            f"no PostgreSQL driver for {url.drivername}:// ({exc}); write "
            "postgresql+psycopg2:// (installed with labrun) in tracking.uri, or pip install psycopg"
        ) from None
    try:
        conn = engine.connect()
    except sqlalchemy.exc.DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise TrackingError(
            f"cannot reach the PostgreSQL store {url.render_as_string(hide_password=True)} "
            f"({reason}); start the database or fix tracking.uri / MLFLOW_TRACKING_URI"
        ) from None
    lock = sqlalchemy.text("SELECT pg_advisory_lock(:key)")
    try:
        conn.execute(lock, {"key": MIGRATION_LOCK})
        _get_store(uri)
    finally:
        conn.close()  # ends the session, and the lock with it
        engine.dispose()


def client_for(uri: str | None) -> MlflowClient:
    """A client of `uri` (default: `default_uri()`), checked to answer."""
    uri = uri or default_uri()
    check_reachable(uri, 10.0)
    return MlflowClient(tracking_uri=uri)


def get_run(client: MlflowClient, run_id: str) -> Run:
    try:
        return client.get_run(run_id)
    except MlflowException:
        raise TrackingError(
            f"no run '{run_id}' in the tracking store {client.tracking_uri}; check the id "
            "(labrun runs lists them) or --tracking-uri / MLFLOW_TRACKING_URI"
        ) from None


def get_runs(client: MlflowClient, run_ids: Iterable[str]) -> list[Run]:
    return [get_run(client, run_id) for run_id in run_ids]


# MLflow's UI opens an experiment by its kind; without one it guesses GenAI (a Traces page).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


T = TypeVar("T")


def again_if_raced(write: Callable[[], T], tries: int = 5) -> T:
    """`write()`, again when it lost a race. MLflow looks for a row before inserting it (an
    experiment by name, a dataset by name and digest), so two jobs of a parallel sweep that
    start together can both look, both insert, and one fail on the store's unique
    constraint. The row is there by then: the same write, done again, finds and uses it."""
    for attempt in range(1, tries):
        try:
            return write()
        except MlflowException as exc:
            # SQLite: "UNIQUE constraint failed"; PostgreSQL: "violates unique constraint"
            if "unique constraint" not in str(exc).lower():
                raise
            time.sleep(0.05 * attempt)
    return write()


def ensure_experiment(client: MlflowClient, name: str, artifact_root: str | None) -> str:
    """The id of experiment `name`, created with artifacts under `artifact_root/name` if new;
    marked as model training for MLflow's UI (an older labrun experiment gets the mark too).
    Jobs starting together may all find it missing: see `again_if_raced`."""
    return again_if_raced(lambda: _ensure_experiment(client, name, artifact_root))


def _ensure_experiment(client: MlflowClient, name: str, artifact_root: str | None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if not any(k in exp.tags for k in EXPERIMENT_KIND):  # a user's own kind is kept
            for key, value in EXPERIMENT_KIND.items():
                client.set_experiment_tag(exp.experiment_id, key, value)
        return exp.experiment_id
    location = (Path(artifact_root) / name).resolve().as_uri() if artifact_root else None
    return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
