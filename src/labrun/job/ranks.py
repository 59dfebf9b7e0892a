"""Which process of a distributed job this is: only rank 0 talks to the tracking store.

Ranks are started three ways: Lightning relaunching the command (`LOCAL_RANK`, `NODE_RANK`),
torchrun (`RANK`), or SLURM starting one task per device (`SLURM_PROCID` with `SLURM_NTASKS`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from lightning.pytorch.callbacks import Callback

from labrun.environ import restored

RUN_ID_ENV = "LABRUN_RUN_ID"  # rank 0's run, inherited by the ranks Lightning starts


def is_rank_zero() -> bool:
    """Read from the environment, so it is known before any process group exists."""
    env = os.environ
    names = ["RANK", "LOCAL_RANK", "NODE_RANK"]
    if int(env.get("SLURM_NTASKS", "1")) > 1:
        names.append("SLURM_PROCID")
    return all(env.get(name, "0") == "0" for name in names)


def relaunch_this_job(cfg: Any) -> None:
    """Make Lightning's relaunch of the other ranks run this job, in this job's folder.

    Lightning starts ranks 1.. by running `sys.argv` again with `hydra.run.dir` set to Hydra's
    run folder. Under `-m` that would rerun the whole sweep into new folders; instead the ranks
    get this job's own overrides, and Hydra's run folder is pointed at this job's folder.
    The command is the script that started this process (the `labrun` console script); under
    `python -m labrun` Lightning runs the module again and ignores `argv[0]`.
    """
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    import __main__

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    overrides = [o for o in hydra_cfg.overrides.task if not o.startswith("hydra.")]
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.run.dir = str(cfg.paths.output_dir)
    script = getattr(__main__, "__file__", None) or sys.argv[0]
    sys.argv = [script, str(cfg.task_name), *overrides]


DDP_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", RUN_ID_ENV)


@contextlib.contextmanager
def job_scope() -> Iterator[None]:
    """One DDP job's process state, undone at its end: Lightning leaves `LOCAL_RANK` & co in
    the environment and the process group open, and the next job of a multirun in this
    process would then take itself for a rank of the finished job instead of starting its own."""
    with restored(DDP_ENV):
        try:
            yield
        finally:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()


class FollowerRun:
    """What ranks other than 0 hold instead of a `TrackedRun`: rank 0's run id, and no-op
    recording, so that one job makes one run whatever its number of processes."""

    def __init__(self) -> None:
        self.run_id = os.environ.get(RUN_ID_ENV, "")
        self.logged_through: dict[str, int] = {}
        self.signal_received: int | None = None

    def __enter__(self) -> FollowerRun:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def signalled(self, signum: int) -> None:
        self.signal_received = signum

    def raise_if_signalled(self) -> None:
        if self.signal_received is not None:  # rank 0 ends the run; this rank just stops
            raise SystemExit(128 + self.signal_received)

    def stop_callback(self) -> Callback:
        return Callback()

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        return None
