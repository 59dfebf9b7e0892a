"""Lightning callbacks of the train task that labrun's configs name (`conf/callbacks/`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L


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

        from labrun.tracking.logger import RunLogger

        path = Path(trainer.default_root_dir) / "samples" / f"epoch_{epoch:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(pl_module.sample_grid(), path, nrow=self.nrow)
        for logger in trainer.loggers:
            if isinstance(logger, RunLogger):
                logger.log_file(path, "samples")
