"""`labrun`: one thin command per step of the loop, behind one static table of verbs."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from labrun.cli.common import fail
from labrun.sweep.flags import SWEEP_FLAGS

USAGE = """usage: labrun COMMAND [ARGS]

commands:
  train [OVERRIDES]     compose a config, train, test and record an MLflow run (-m: a grid;
                        the same -m command again continues a sweep that did not finish)
  eval  [OVERRIDES]     test a trained model: run_id=<id> or ckpt_path=<file>
  check [OVERRIDES]     your model and data checked against labrun's contract, without training
  new NAME              a small working project of your own: model, data, experiment, test
  sweep [OVERRIDES]     an Optuna search: hparams_search=NAME [--workers N]; rerun to resume
  sweep status ID       where a sweep stands, from the store [--wait]; sweep resume ID
  sweeps                every sweep in the store: trials queued, running, finished, failed
  compare [RUNS] ...    what differs between runs, and whether it is real (--help)
  rerun RUN_ID [OVERRIDES]
                        train a stored run again: drift report, then REPRODUCED or DIFFERS
  resume RUN_ID         continue a killed or crashed run from its newest checkpoint
  register ID --name N  a run's model (or a sweep's best trial's) in MLflow's registry, @best
  runs [--stale]        the runs in the store; --stale closes runs whose process is gone
  server start|stop     a team tracking server (PostgreSQL + MLflow) on this machine
  slurm start|stop      a one-node SLURM cluster on this machine, to try and test sweeps on

Overrides are Hydra's: experiment=sst2_lstm model.hidden_size=256 debug=fdr ...
Hydra's own flags work too: labrun train --cfg job, labrun train --help, labrun train -m ...
Your project's configs are found on their own: ./conf, [tool.labrun] config_dirs in its
pyproject.toml, $LABRUN_CONFIG_PATH, or --config-dir DIR on any command.
"""

# Hydra flags after which labrun does not compose the config first: they print something else.
NO_PREFLIGHT = {
    "--help",
    "-h",
    "--hydra-help",
    "--info",
    "-i",
    "--shell-completion",
    "-sc",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--version",
}
CONFIG_DIR_FLAGS = ("--config-dir", "-cd")

log = logging.getLogger("labrun")


def take_config_dirs(argv: list[str]) -> tuple[list[str], list[str]]:
    """`--config-dir DIR` (also `-cd DIR`, `--config-dir=DIR`) anywhere in `argv`: the folders,
    and the rest in order."""
    dirs, rest = [], []
    args = iter(argv)
    for arg in args:
        flag, eq, value = arg.partition("=")
        if flag in CONFIG_DIR_FLAGS:
            given = value if eq else next(args, None)
            if not given:
                fail(f"{flag} needs a folder: {flag} DIR")
            if not Path(given).is_dir():
                fail(
                    f"{flag} {given}: no such folder; give the folder that holds your config groups"
                )
            dirs.append(given)
        else:
            rest.append(arg)
    return dirs, rest


def take_sweep_flags(name: str, argv: list[str]) -> list[str]:
    """`--allow-drift`, `--detach` (train -m only), passed on in the environment."""
    for flag, (env, what) in SWEEP_FLAGS.items():
        if flag not in argv:
            continue
        if name != "train" or not any(a in ("-m", "--multirun") for a in argv):
            fail(f"{flag} {what}: use it with labrun train -m")
        os.environ[env] = "1"
        argv = [a for a in argv if a != flag]
    return argv


VALUED_FLAGS = {"--cfg", "-c", "--package", "-p"}  # Hydra flags that take the next word
CFG_CHOICES = ("job", "hydra", "all")


def overrides_of(argv: list[str]) -> list[str]:
    """The overrides in a Hydra command line: every word but flags and flags' values
    (`--cfg job`, `--package model`, `--resolve`). A flag without its value, or `--cfg` with
    one Hydra does not know, is labrun's one line here, before anything is composed."""
    found, words = [], iter(argv)
    for word in words:
        flag, eq, given = word.partition("=")
        if flag in VALUED_FLAGS:
            value = given if eq else next(words, None)
            if not value or value.startswith("-"):
                fail(f"{flag} needs a value: {flag} {'job' if flag in ('--cfg', '-c') else 'NAME'}")
            if flag in ("--cfg", "-c") and value not in CFG_CHOICES:
                fail(f"{flag} {value}: use one of {', '.join(CFG_CHOICES)} (--cfg job: the config)")
        elif not word.startswith("-"):
            found.append(word)
    return found


def hydra_task(name: str, load_app: Callable[[], Callable[[], None]], argv: list[str]) -> None:
    """A Hydra app (train, eval): the config checked in one line first, then Hydra runs it.

    `--config-dir` joins `$LABRUN_CONFIG_PATH` (the user's folders, after labrun's own), so the
    preflight, Hydra and every child process search the same folders.
    """
    from labrun.config.compose import preflight, preflight_multirun
    from labrun.config.search_path import extra_config_dirs
    from labrun.store.places import check_run_places

    dirs, argv = take_config_dirs(argv)
    argv = take_sweep_flags(name, argv)
    writes = not any(a.split("=")[0] in ("--cfg", "-c") for a in argv)  # --cfg only prints
    with extra_config_dirs(dirs):
        if any(a in ("-m", "--multirun") for a in argv):
            checked = preflight_multirun(name, overrides_of(argv))  # before the parent run
            for cfg in checked:  # a swept tracking.uri: each job's store
                check_run_places(cfg, writes)
        elif not any(a.split("=")[0] in NO_PREFLIGHT for a in argv):
            check_run_places(preflight(name, overrides_of(argv)), writes)
        # Hydra reads its overrides from sys.argv; argv[0] names the command in Hydra's --help.
        sys.argv = [f"labrun {name}", *argv]
        load_app()()  # imported after the preflight: a bad value never waits for MLflow


def _train(argv: list[str]) -> None:
    def app() -> Callable[[], None]:
        from labrun.cli import train

        return train.main

    hydra_task("train", app, argv)


def _eval(argv: list[str]) -> None:
    def app() -> Callable[[], None]:
        from labrun.cli import eval as eval_command

        return eval_command.main

    hydra_task("eval", app, argv)


def _check(argv: list[str]) -> None:
    from labrun.cli import check
    from labrun.config.search_path import extra_config_dirs

    dirs, rest = take_config_dirs(argv)
    with extra_config_dirs(dirs):
        check.main(rest)


def _new(argv: list[str]) -> None:
    from labrun.cli import new

    new.main(argv)


def _sweep(argv: list[str]) -> None:
    from labrun.cli import sweep
    from labrun.config.search_path import extra_config_dirs

    dirs, rest = take_config_dirs(argv)
    with extra_config_dirs(dirs):  # the workers inherit it
        sweep.main(rest)


def _sweeps(argv: list[str]) -> None:
    from labrun.cli import sweeps

    sweeps.main(argv)


def _compare(argv: list[str]) -> None:
    from labrun.cli import compare

    compare.main(argv)


def _rerun(argv: list[str]) -> None:
    from labrun.cli import rerun

    rerun.main(argv)


def _resume(argv: list[str]) -> None:
    from labrun.cli import resume

    resume.main(argv)


def _register(argv: list[str]) -> None:
    from labrun.cli import register

    register.main(argv)


def _runs(argv: list[str]) -> None:
    from labrun.cli import runs

    runs.main(argv)


def _slurm(argv: list[str]) -> None:
    from labrun.cli import slurm

    slurm.main(argv)


def _server(argv: list[str]) -> None:
    from labrun.cli import server

    server.main(argv)


# Each verb imports only what it needs: `labrun runs` never pays for Lightning's import.
VERBS: dict[str, Callable[[list[str]], None]] = {
    "train": _train,
    "eval": _eval,
    "check": _check,
    "new": _new,
    "sweep": _sweep,
    "sweeps": _sweeps,
    "compare": _compare,
    "rerun": _rerun,
    "resume": _resume,
    "register": _register,
    "runs": _runs,
    "server": _server,
    "slurm": _slurm,
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
    from labrun.quiet import quiet

    quiet()
    if verb not in HYDRA_VERBS:  # the same log format as Hydra gives the tasks
        logging.basicConfig(format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
        log.setLevel(logging.INFO)
    from labrun.cli.common import debugging, explain_exception

    try:
        VERBS[verb](rest)
    except LabrunError as exc:
        fail(str(exc), exc.exit_code)
    except Exception as exc:  # anything else reaching the user is one line, traceback kept
        if debugging():
            raise
        fail(explain_exception(exc), 1)
