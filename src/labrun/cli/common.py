"""What every command shares: the one-line error, and the options that name a store and what a
stored config may import."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any, NoReturn

log = logging.getLogger("labrun")


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"labrun: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def add_store_options(parser: argparse.ArgumentParser, allow_target: bool = True) -> None:
    """`--tracking-uri`, and `--allow-target` for commands that build from a stored config."""
    parser.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else runs/mlflow.db")
    if allow_target:
        parser.add_argument(
            "--allow-target",
            action="append",
            default=[],
            help="a package the stored config may name in _target_ beyond the built-in allowlist",
        )


def add_config_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="a config folder to search beyond the run's recorded ones (repeatable)",
    )


def run_task(task: Callable[[Any], Any], cfg: Any) -> Any:
    """Run a Hydra task; a LabrunError ends it with one line and its exit code. In a multirun a
    failed job's run is FAILED and the sweep goes on (its parent counts it)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from labrun.errors import LabrunError

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        return task(cfg)
    except LabrunError as exc:
        if multirun:
            print(f"labrun: error: job {HydraConfig.get().job.num}: {exc}", file=sys.stderr)
            return None
        fail(str(exc), exc.exit_code)
    except Exception:
        if multirun:
            log.exception("job %s failed", HydraConfig.get().job.num)
            return None
        raise
