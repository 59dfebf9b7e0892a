"""Lightning callbacks that labrun's configs name (`conf/callbacks/`)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class SampleGrid(L.Callback):
    """Saves the model's fixed-noise `sample_grid()` as a PNG each epoch and hands it to every
    logger that can store files (labrun's MLflow logger puts it under `samples/`)."""

    def __init__(self, every_n_epochs: int = 1, nrow: int = 8) -> None:
        self.every_n_epochs = every_n_epochs
        self.nrow = nrow

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        epoch = trainer.current_epoch
        if (
            trainer.sanity_checking
            or (epoch + 1) % self.every_n_epochs
            or not trainer.is_global_zero
        ):
            return
        from torchvision.utils import save_image

        path = Path(trainer.default_root_dir) / "samples" / f"epoch_{epoch:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(pl_module.sample_grid(), path, nrow=self.nrow)
        for logger in trainer.loggers:
            if hasattr(logger, "log_file"):
                logger.log_file(path, "samples")


class ResumeCheckpoint(ModelCheckpoint):
    """The mid-epoch `resume.ckpt` for `labrun resume`, written every `every_s` seconds of
    training and overwritten each time.

    A clock, not a step count: its cost stays a fixed share of training time (a 37 MB save every
    minute is ~0.2%) whatever a step costs, and a kill loses at most `every_s` of work. Where a
    checkpoint falls never changes results (every batch reseeds from its position), so runs
    with checkpoints at other moments still agree bit for bit. `every_s=null` with
    `every_n_train_steps=N` counts steps instead.
    """

    def __init__(self, every_s: float | None = 60.0, **kwargs: Any) -> None:
        if every_s:
            kwargs["train_time_interval"] = timedelta(seconds=every_s)
        kwargs.setdefault("filename", "resume")
        kwargs.setdefault("save_top_k", 1)
        kwargs.setdefault("enable_version_counter", False)
        super().__init__(**kwargs)
