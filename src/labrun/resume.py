"""`labrun resume RUN_ID`: continue a crashed or killed run from its newest checkpoint, in the
same MLflow run, ending with the metrics the uninterrupted run would have had."""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, open_dict

from labrun.errors import LabrunError

log = logging.getLogger(__name__)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="labrun resume", description=__doc__)
    p.add_argument("run_id")
    p.add_argument("--checkpoint", help="resume from this file instead of the newest checkpoint")
    p.add_argument(
        "--allow-target",
        action="append",
        default=[],
        help="a package the stored config may name in _target_ beyond the built-in allowlist",
    )
    p.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else runs/mlflow.db")
    return p.parse_args(argv)


def checkpoint_step(path: Path) -> int | None:
    """The global step a checkpoint file was saved at, or None when it does not load whole."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(ckpt["global_step"])
    except Exception as exc:  # a file cut short by the kill: never resume from it
        log.warning("skipping checkpoint %s: it does not load (%s)", path, exc)
        return None


def newest_checkpoint(client: Any, run_id: str, cfg: DictConfig, into: Path) -> Path:
    """The loadable checkpoint with the highest step: in the run's output folder (written as
    it trained), else among the run's stored artifacts."""
    folders = {
        Path(str(c.dirpath))
        for c in (cfg.get("callbacks") or {}).values()
        if c is not None and str(c.get("_target_", "")).endswith("ModelCheckpoint")
    }
    candidates = [p for folder in folders if folder.is_dir() for p in folder.glob("*.ckpt")]
    if not candidates:
        from labrun.tracking.stored import download

        for name in ("last.ckpt", "best.ckpt"):
            if local := download(client, run_id, f"checkpoints/{name}", into):
                candidates.append(local)
    steps = {p: checkpoint_step(p) for p in candidates}
    loadable = {p: s for p, s in steps.items() if s is not None}
    if not loadable:
        where = ", ".join(str(f) for f in sorted(folders)) or "its output folder"
        raise LabrunError(
            f"run '{run_id}' has no loadable checkpoint (looked in {where} and the store); "
            "nothing to resume from: rerun it instead (labrun rerun)"
        )
    return max(loadable, key=lambda p: (loadable[p], p.name == "resume.ckpt"))


def resume(args: argparse.Namespace) -> dict[str, float]:
    from labrun.tracking import stored
    from labrun.tracking.stale import mark_stale, stale_reason
    from labrun.train import train

    client = stored.client_for(args.tracking_uri)
    run = stored.get_run(client, args.run_id)
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
        cfg = stored.stored_config(client, args.run_id, Path(tmp), args.allow_target)
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
        return train(cfg, resume_run_id=args.run_id)


def run(argv: list[str]) -> None:
    args = parse(argv)
    metrics = resume(args)
    print(f"resumed run {args.run_id}: FINISHED")
    for key in sorted(k for k in metrics if k.startswith("test/")):
        print(f"  {key} = {metrics[key]:.6f}")
