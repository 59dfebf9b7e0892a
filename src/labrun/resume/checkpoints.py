"""Checkpoints for `labrun resume`: the mid-epoch one written by the clock, every checkpoint
written whole or not at all, and the newest one that loads picked after a crash."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from labrun.errors import LabrunError
from labrun.files import written_whole

log = logging.getLogger(__name__)


class ResumeCheckpoint(ModelCheckpoint):
    """The mid-epoch `resume.ckpt` for `labrun resume`, written every `every_s` seconds of
    training and overwritten each time.

    A clock, not a step count: its cost stays a fixed share of training time whatever a step
    costs, and a kill loses at most `every_s` of work. Where a checkpoint falls never changes
    results (every batch reseeds from its position), so runs with checkpoints at other moments
    still agree bit for bit. `every_s=null` with `every_n_train_steps=N` counts steps instead.
    """

    def __init__(self, every_s: float | None = 60.0, **kwargs: Any) -> None:
        if every_s:
            kwargs["train_time_interval"] = timedelta(seconds=every_s)
        kwargs.setdefault("filename", "resume")
        kwargs.setdefault("save_top_k", 1)
        kwargs.setdefault("enable_version_counter", False)
        super().__init__(**kwargs)


class FileCheckpointIO(TorchCheckpointIO):
    """Saves to `<file>.<pid>.partial` and renames it into place.

    Lightning's own writer serialises the whole checkpoint into memory and copies it out before
    writing, so a save briefly holds the checkpoint twice over. Streaming to a partial file
    keeps peak memory flat; the rename keeps the guarantee that a killed save never leaves a
    cut-short file under the real name. Remote paths (`s3://...`) go to Lightning's writer.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with written_whole(path) as partial:
            torch.save(checkpoint, partial)


def checkpoint_step(path: Path) -> int | None:
    """The global step a checkpoint file was saved at, or None when it does not load whole."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(ckpt["global_step"])
    except Exception as exc:  # a file cut short by the kill: never resume from it
        log.warning("skipping checkpoint %s: it does not load (%s)", path, exc)
        return None


def newest_checkpoint(client: MlflowClient, run_id: str, cfg: DictConfig, into: Path) -> Path:
    """The loadable checkpoint with the highest step: in the run's output folder (written as
    it trained), else among the run's stored artifacts."""
    from labrun.store.artifacts import download

    folders = {
        Path(str(c.dirpath))
        for c in (cfg.get("callbacks") or {}).values()
        if c is not None and str(c.get("_target_", "")).endswith("ModelCheckpoint")
    }
    candidates = [p for folder in folders if folder.is_dir() for p in folder.glob("*.ckpt")]
    if not candidates:
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
