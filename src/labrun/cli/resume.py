"""`labrun resume RUN_ID`: continue a crashed or killed run from its newest checkpoint, in the
same MLflow run, ending with the metrics the uninterrupted run would have had."""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import open_dict

from labrun.cli.common import Parser, add_config_dir_option, add_store_options
from labrun.errors import LabrunError

log = logging.getLogger(__name__)


def parse(argv: list[str]) -> argparse.Namespace:
    p = Parser(prog="labrun resume", description=__doc__)
    p.add_argument("run_id")
    p.add_argument("--checkpoint", help="resume from this file instead of the newest checkpoint")
    add_store_options(p)
    add_config_dir_option(p)
    return p.parse_intermixed_args(argv)


def resume(args: argparse.Namespace) -> dict[str, Any]:
    """Refuse finished and live runs, mark a stale one FAILED, then train on from the newest
    whole checkpoint inside the same run."""
    from labrun.job.train import train
    from labrun.resume.checkpoints import checkpoint_step, newest_checkpoint
    from labrun.resume.stale import mark_stale, stale_reason
    from labrun.store.artifacts import stored_config
    from labrun.store.client import client_for, get_run

    client = client_for(args.tracking_uri)
    run = get_run(client, args.run_id)
    status = run.info.status
    if status == "FINISHED":
        raise LabrunError(
            f"run '{args.run_id}' finished; nothing to resume (labrun rerun {args.run_id} "
            "trains it again)"
        )
    if run.data.tags.get("labrun.task", "train") != "train":
        raise LabrunError(f"run '{args.run_id}' is not a training run; only those resume")
    if status == "RUNNING":
        reason = stale_reason(run)
        if reason is None:
            host = run.data.tags.get("labrun.hostname", "?")
            pid = run.data.tags.get("labrun.pid", "?")
            raise LabrunError(
                f"run '{args.run_id}' is still running (pid {pid} on {host}); stop it first, "
                "or wait for it"
            )
        log.info("run %s was left RUNNING (%s): marking it FAILED", args.run_id, reason)
        mark_stale(client, run, reason)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = stored_config(client, args.run_id, Path(tmp), args.allow_target)
        ckpt = Path(args.checkpoint) if args.checkpoint else None
        if ckpt is not None and checkpoint_step(ckpt) is None:
            raise LabrunError(f"--checkpoint {ckpt} does not load; give a whole checkpoint file")
        ckpt = ckpt or newest_checkpoint(client, args.run_id, cfg, Path(tmp))
        log.info("resuming run %s from %s", args.run_id, ckpt)
        with open_dict(cfg):
            cfg.ckpt_path = str(ckpt)
            cfg.tracking.uri = client.tracking_uri
            cfg.allowed_targets = list(args.allow_target)
        Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
        from labrun.config.search_path import extra_config_dirs

        with extra_config_dirs(args.config_dir):  # searched by anything composed on the way
            return train(cfg, resume_run_id=args.run_id)


def main(argv: list[str]) -> None:
    args = parse(argv)
    metrics = resume(args)
    print(f"resumed run {args.run_id}: FINISHED")
    for key in sorted(k for k in metrics if k.startswith("test/")):
        print(f"  {key} = {metrics[key]:.6f}")
