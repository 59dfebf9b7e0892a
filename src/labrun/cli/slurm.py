"""`labrun slurm start|stop`: a one-node SLURM cluster on this machine (make slurm)."""

from __future__ import annotations

from pathlib import Path

from labrun.cli.common import Parser
from labrun.sweep import cluster


def main(argv: list[str]) -> None:
    p = Parser(prog="labrun slurm", description=cluster.__doc__.splitlines()[0])
    p.add_argument("action", choices=["start", "stop"])
    p.add_argument("--dir", default="runs/slurm", help="slurm.conf, state, spool, logs, pids")
    args = p.parse_args(argv)
    folder = Path(args.dir)
    if args.action == "start":
        print(f"SLURM up: {cluster.start(folder)} (slurm.conf in {folder})")
    else:
        stopped = cluster.stop(folder)
        print(f"stopped {', '.join(stopped)}" if stopped else f"no SLURM daemons of {folder} ran")
