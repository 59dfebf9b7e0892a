"""What every command shares: the one-line error, and the options that name a store and what a
stored config may import."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

log = logging.getLogger("labrun")


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"labrun: error: {message}", file=sys.stderr)
    raise SystemExit(code)


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are labrun's one line (and exit 2), like every other error."""

    def error(self, message: str) -> NoReturn:
        # parse_intermixed_args names an optional `nargs="*"` positional as required too
        message = message.replace(", overrides", "")
        fail(f"{self.prog}: {message} (see {self.prog} --help)")


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


def last_error_file() -> Path:
    """Where the traceback of the last unexpected error goes: the run folder's last_error.txt."""
    from labrun.config.compose import project_root

    return Path(os.environ.get("LABRUN_RUN_DIR") or project_root() / "runs") / "last_error.txt"


def explain_exception(exc: BaseException) -> str:
    """An exception from Hydra, Lightning, torch, MLflow or the OS as one line naming what is
    responsible; the traceback is kept in `last_error_file()` (and in a run's traceback.txt)."""
    import traceback

    where = last_error_file()
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_text("".join(traceback.format_exception(exc)))
        kept = f" (traceback in {where}; LABRUN_DEBUG=1 shows it)"
    except OSError:
        kept = " (LABRUN_DEBUG=1 shows the traceback)"
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    kind = type(exc).__name__
    module = type(exc).__module__ or ""
    if kind == "InstantiationException":  # Hydra's first line names the target, not why
        key = re.search(r"^full_key: (\S+)", str(exc), re.MULTILINE)
        cause = exc.__cause__
        said = (str(cause).strip().splitlines() or [""])[0][:300] if cause else first
        return f"{key.group(1) if key else 'a config node'} could not be built: {said}{kept}"
    if kind == "MisconfigurationException" or module.startswith("lightning"):
        return (
            f"Lightning refused the configuration: {first}; check trainer.* and callbacks.*{kept}"
        )
    if module.startswith(("mlflow", "sqlalchemy")):
        return f"the tracking store failed: {first}; check tracking.uri and the store{kept}"
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or first}{kept}"
    return f"{kind}: {first}{kept}"


def debugging() -> bool:
    return os.environ.get("LABRUN_DEBUG") == "1" or os.environ.get("HYDRA_FULL_ERROR") == "1"


def run_task(task: Callable[[Any], Any], cfg: Any) -> Any:
    """Run a Hydra task; a LabrunError ends it with one line and its exit code. In a multirun a
    failed job's run is FAILED and the sweep goes on (its parent counts it)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from labrun.errors import LabrunError

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    if multirun:  # a job of a local parallel sweep stops when its sweep process is gone
        from labrun.sweep.orphans import leave_if_orphaned, watch_sweep
        from labrun.sweep.parent import read_parent_file

        watch_sweep(read_parent_file(HydraConfig.get().sweep.dir))
    try:
        return task(cfg)
    except LabrunError as exc:
        if multirun:
            print(f"labrun: error: job {HydraConfig.get().job.num}: {exc}", file=sys.stderr)
            return None
        fail(str(exc), exc.exit_code)
    except Exception as exc:
        if multirun:
            log.exception("job %s failed", HydraConfig.get().job.num)
            return None
        if debugging():
            raise
        fail(explain_exception(exc), 1)
    finally:
        if multirun:
            leave_if_orphaned()
