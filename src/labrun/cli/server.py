"""`labrun server start|stop`: a team tracking server (PostgreSQL + MLflow) on this machine."""

from __future__ import annotations

from pathlib import Path

from labrun.cli.common import Parser
from labrun.store import server


def main(argv: list[str]) -> None:
    p = Parser(prog="labrun server", description=server.__doc__)
    p.add_argument("action", choices=["start", "stop"])
    p.add_argument("--dir", default="runs/server", help="data, artifacts and logs")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--pg-port", type=int, default=5433)
    args = p.parse_args(argv)
    if args.action == "start":
        info = server.start(Path(args.dir), args.port, args.pg_port)
        print(f"MLflow server {info.uri} on PostgreSQL {info.database_uri()}")
        print(f"  labrun train tracking=server tracking.uri={info.uri}")
        print(f"  optuna storage: {info.database_uri('optuna')}")
    elif server.read(Path(args.dir)) is None:
        print(f"no server recorded in {args.dir}: nothing to stop")
    else:
        server.stop(Path(args.dir))
        print("stopped")
