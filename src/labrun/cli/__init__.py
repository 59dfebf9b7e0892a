"""`labrun`: one thin command per step of the loop, behind one static table of verbs."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from labrun.cli.common import fail

USAGE = """usage: labrun COMMAND [ARGS]

commands:
  train [OVERRIDES]     compose a config, train, test and record an MLflow run (-m: a grid)
  eval  [OVERRIDES]     test a trained model: run_id=<id> or ckpt_path=<file>
  sweep [OVERRIDES]     an Optuna search: hparams_search=NAME [--workers N]; rerun to resume
  compare [RUNS] ...    what differs between runs, and whether it is real (--help)
  rerun RUN_ID [OVERRIDES]
                        train a stored run again: drift report, then REPRODUCED or DIFFERS
  resume RUN_ID         continue a killed or crashed run from its newest checkpoint
  runs [--stale]        the runs in the store; --stale closes runs whose process is gone
  server start|stop     a team tracking server (PostgreSQL + MLflow) on this machine

Overrides are Hydra's: experiment=sst2_lstm model.hidden_size=256 debug=fdr ...
Hydra's own flags work too: labrun train --cfg job, labrun train --help, labrun train -m ...
"""

HYDRA_FLAGS = {
    "--cfg",
    "-c",
    "--help",
    "-h",
    "--hydra-help",
    "--info",
    "-i",
    "--multirun",
    "-m",
    "--shell-completion",
    "-sc",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--version",
}

log = logging.getLogger("labrun")


def hydra_task(name: str, app: Callable[[], None], argv: list[str]) -> None:
    """A Hydra app (train, eval): the config checked in one line first, then Hydra runs it."""
    from labrun.config.compose import preflight

    if not any(a.split("=")[0] in HYDRA_FLAGS for a in argv) and not any(
        a.startswith("hydra") for a in argv
    ):
        preflight(name, argv)
    # Hydra reads its overrides from sys.argv; argv[0] names the command in Hydra's --help.
    sys.argv = [f"labrun {name}", *argv]
    app()


def _train(argv: list[str]) -> None:
    from labrun.cli import train

    hydra_task("train", train.main, argv)


def _eval(argv: list[str]) -> None:
    from labrun.cli import eval as eval_command

    hydra_task("eval", eval_command.main, argv)


def _sweep(argv: list[str]) -> None:
    from labrun.cli import sweep

    sweep.main(argv)


def _compare(argv: list[str]) -> None:
    from labrun.cli import compare

    compare.main(argv)


def _rerun(argv: list[str]) -> None:
    from labrun.cli import rerun

    rerun.main(argv)


def _resume(argv: list[str]) -> None:
    from labrun.cli import resume

    resume.main(argv)


def _runs(argv: list[str]) -> None:
    from labrun.cli import runs

    runs.main(argv)


def _server(argv: list[str]) -> None:
    from labrun.cli import server

    server.main(argv)


# Each verb imports only what it needs: `labrun runs` never pays for Lightning's import.
VERBS: dict[str, Callable[[list[str]], None]] = {
    "train": _train,
    "eval": _eval,
    "sweep": _sweep,
    "compare": _compare,
    "rerun": _rerun,
    "resume": _resume,
    "runs": _runs,
    "server": _server,
}
HYDRA_VERBS = {"train", "eval"}  # Hydra sets up their logging itself


def main(argv: list[str] | None = None) -> None:
    from labrun.errors import LabrunError

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        raise SystemExit(0 if args else 2)
    verb, rest = args[0], args[1:]
    if verb not in VERBS:
        fail(f"unknown command '{verb}'; use one of: {', '.join(VERBS)}")
    if verb not in HYDRA_VERBS:  # the same log format as Hydra gives the tasks
        logging.basicConfig(format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
        log.setLevel(logging.INFO)
    try:
        VERBS[verb](rest)
    except LabrunError as exc:
        fail(str(exc), exc.exit_code)
