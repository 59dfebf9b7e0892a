"""A team tracking server on this machine: PostgreSQL plus an MLflow server that uses it as
its backend store and proxies artifacts, both bound to 127.0.0.1.

    labrun server start [--dir runs/server] [--port 5000] [--pg-port 5433]
    labrun server stop  [--dir runs/server]

(`make server` and `make server-stop`.) The same PostgreSQL holds an `optuna` database, so
sweep workers on several machines share one study:
`labrun sweep ... hparams_search.storage=postgresql+psycopg2://postgres@HOST:5433/optuna`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labrun.errors import TrackingError

DATABASES = ("mlflow", "optuna")
POSTGRES_ROOTS = (Path("/usr/lib/postgresql"),)  # Debian's layout: <root>/<version>/bin


@dataclass
class Server:
    folder: str
    port: int
    pg_port: int
    mlflow_pid: int

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def database_uri(self, name: str = "mlflow") -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.pg_port}/{name}"


def postgres_bin() -> Path:
    """The folder holding initdb and pg_ctl, or a one-line error saying what to install."""
    found = sorted(p for root in POSTGRES_ROOTS for p in root.glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    if initdb := shutil.which("initdb"):
        return Path(initdb).parent
    raise TrackingError(
        "PostgreSQL is not installed; install it (Debian/Ubuntu: apt-get install postgresql, "
        "macOS: brew install postgresql@15) or point tracking.uri at an existing server"
    )


def _as_postgres(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """PostgreSQL refuses to run as root: as root, run it as the `postgres` user."""
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    return subprocess.run(args, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]


def _check(done: subprocess.CompletedProcess[str], what: str) -> None:
    if done.returncode:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise TrackingError(f"{what} failed: {last[0]}")


def pg_folder(folder: Path) -> Path:
    """PostgreSQL's data folder. As root it lives in the postgres user's home, which that
    user owns and can reach (a project under /root is closed to it); else beside the rest."""
    if os.geteuid() == 0:
        import hashlib

        key = hashlib.sha256(str(folder).encode()).hexdigest()[:12]
        return Path("/var/lib/postgresql") / f"labrun-{key}"
    return folder / "pgdata"


def start(folder: Path, port: int = 5000, pg_port: int = 5433, timeout_s: float = 60) -> Server:
    """Start (or find running) PostgreSQL and the MLflow server; returns where they listen."""
    folder = folder.resolve()
    if (info := read(folder)) and _healthy(info.uri):
        return info
    folder.mkdir(parents=True, exist_ok=True)
    start_postgres(pg_folder(folder), pg_port)
    artifacts = folder / "artifacts"
    artifacts.mkdir(exist_ok=True)
    server_log = open(folder / "mlflow.log", "ab")  # noqa: SIM115 - the server keeps it
    backend = f"postgresql+psycopg2://postgres@127.0.0.1:{pg_port}/mlflow"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend]
    command += ["--serve-artifacts", "--artifacts-destination", str(artifacts)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    proc = subprocess.Popen(
        command,
        stdout=server_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stop() ends the workers too
    )
    info = Server(str(folder), port, pg_port, proc.pid)
    (folder / "server.json").write_text(json.dumps(asdict(info)))
    deadline = time.time() + timeout_s
    while not _healthy(info.uri):
        if proc.poll() is not None or time.time() > deadline:
            stop(folder)
            raise TrackingError(
                f"the MLflow server did not come up on {info.uri}; see {folder / 'mlflow.log'}"
            )
        time.sleep(0.5)
    return info


def start_postgres(pgdata: Path, pg_port: int) -> None:
    """A PostgreSQL cluster in `pgdata` listening on 127.0.0.1:`pg_port`, with labrun's
    databases; created the first time, started when it is not running."""
    bindir = postgres_bin()
    if not (pgdata / "PG_VERSION").is_file():
        initdb = [str(bindir / "initdb"), "-D", str(pgdata), "-A", "trust", "-U", "postgres"]
        _check(_as_postgres(initdb), "initdb")
    pg_ctl = [str(bindir / "pg_ctl"), "-D", str(pgdata)]
    if _as_postgres([*pg_ctl, "status"]).returncode:  # after `stop_mlflow`, it is still up
        log = pgdata / "postgres.log"
        options = f"-p {pg_port} -k {pgdata} -c listen_addresses=127.0.0.1"
        started = _as_postgres([*pg_ctl, "-o", options, "-l", str(log), "-w", "start"])
        _check(started, f"starting PostgreSQL (log: {log})")
    for name in DATABASES:
        createdb = [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(pg_port)]
        made = _as_postgres([*createdb, "-U", "postgres", name])
        if made.returncode and "already exists" not in made.stderr:
            _check(made, f"createdb {name}")


def psycopg2_connect(pg_port: int, database: str = "mlflow") -> Any:
    import psycopg2

    return psycopg2.connect(host="127.0.0.1", port=pg_port, user="postgres", dbname=database)


def read(folder: Path) -> Server | None:
    path = folder.resolve() / "server.json"
    return Server(**json.loads(path.read_text())) if path.is_file() else None


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2):
            return True
    except OSError:
        return False


def stop_mlflow(info: Server) -> None:
    """End the MLflow server and its workers; PostgreSQL keeps running."""
    try:
        os.killpg(info.mlflow_pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.killpg(info.mlflow_pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.killpg(info.mlflow_pid, signal.SIGKILL)


def stop(folder: Path, purge: bool = False) -> None:
    """Stop the MLflow server, then PostgreSQL (fast shutdown: sessions end, data is kept
    unless `purge`, which deletes the databases and artifacts: for throwaway servers)."""
    folder = folder.resolve()
    if info := read(folder):
        stop_mlflow(info)
        (folder / "server.json").unlink()
    pgdata = pg_folder(folder)
    if (pgdata / "postmaster.pid").is_file():
        _as_postgres(
            [str(postgres_bin() / "pg_ctl"), "-D", str(pgdata), "-m", "fast", "-w", "stop"]
        )
    if purge:
        shutil.rmtree(pgdata, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
