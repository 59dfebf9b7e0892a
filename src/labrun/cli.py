"""`labrun`: one thin command per step of the loop."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

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

Overrides are Hydra's: experiment=sst2_lstm model.hidden_size=256 debug=fdr ...
Hydra's own flags work too: labrun train --cfg job, labrun train --help, labrun train -m ...
"""

TASKS = {"train": "labrun.train", "eval": "labrun.eval"}  # Hydra apps
COMMANDS = {  # plain argparse
    "sweep": "labrun.sweep",
    "compare": "labrun.compare",
    "rerun": "labrun.rerun",
    "resume": "labrun.resume",
    "runs": "labrun.runs",
}
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


def fail(message: str, code: int = 2) -> None:
    print(f"labrun: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def preflight(config_name: str, overrides: list[str]) -> None:
    """Compose once before Hydra starts the job: a bad key or type fails here, in one line,
    before any output folder, run or data read exists."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from labrun import schema
    from labrun.compose import config_dir, register_resolvers

    register_resolvers()
    schema.register_schemas()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides)
            schema.check_targets(cfg)
    except Exception as exc:
        fail(schema.explain(exc))
    finally:
        GlobalHydra.instance().clear()


def run_task(task: Callable[[Any], Any], cfg: Any) -> Any:
    """Run a Hydra task; a LabrunError ends it with one line and exit code 2."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from labrun.errors import LabrunError

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        return task(cfg)
    except LabrunError as exc:
        if multirun:  # the job's run is FAILED; the sweep goes on and counts it
            print(f"labrun: error: job {HydraConfig.get().job.num}: {exc}", file=sys.stderr)
            return None
        fail(str(exc))
    except Exception:
        if multirun:
            log.exception("job %s failed", HydraConfig.get().job.num)
            return None
        raise


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        raise SystemExit(0 if args else 2)
    command, rest = args[0], args[1:]
    import importlib

    if command in COMMANDS:  # Hydra sets up logging for the tasks; these get the same format
        logging.basicConfig(format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
        log.setLevel(logging.INFO)
        from labrun.errors import LabrunError

        try:
            importlib.import_module(COMMANDS[command]).run(rest)
        except LabrunError as exc:
            fail(str(exc), exc.exit_code)
        return
    if command not in TASKS:
        fail(f"unknown command '{command}'; use one of: {', '.join([*TASKS, *COMMANDS])}")
    if not any(a.split("=")[0] in HYDRA_FLAGS for a in rest) and not any(
        a.startswith("hydra") for a in rest
    ):
        preflight(command, rest)
    module = importlib.import_module(TASKS[command])
    from labrun import ranks

    ranks.ARGV0 = ranks.ARGV0 or sys.argv[0]  # what Lightning relaunches for DDP ranks
    sys.argv = [f"labrun {command}", *rest]
    module.main()
    from labrun.tracking.multirun import failed_sweeps

    if failed_sweeps:
        fail(f"sweep {failed_sweeps[0]} had failed trials; its parent run lists them", code=1)
