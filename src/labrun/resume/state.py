"""What a checkpoint carries beyond Lightning's own so that a resumed run trains exactly like an
uninterrupted one: every RNG state, the position in the data order, unlogged step metrics."""

from __future__ import annotations

import logging
import random
from typing import Any

import lightning as L
import numpy as np
import torch

from labrun.contracts import ResumableData

log = logging.getLogger(__name__)


def rng_states() -> dict[str, Any]:
    """Every RNG state, in types that torch's weights-only checkpoint loading accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ResumableState(L.Callback):
    """Makes a resumed run train exactly like an uninterrupted one.

    Every training batch is reseeded from its position (`job.determinism.ReseedEachBatch`), so
    randomness never depends on history. Each checkpoint also carries every RNG state and the
    position in the data order; loading one restores the states and tells the datamodule where
    the interrupted epoch stopped (`contracts.ResumableData`), so the resumed pass starts at the
    next batch.

    A checkpoint written at the end of a batch precedes Lightning's logging of that batch's
    step metrics; they travel in the checkpoint and are logged on resume (the logger drops
    them if the killed process had stored them), so no logged step goes missing.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.trainer: L.Trainer | None = None
        self._pending: dict[str, Any] = {}

    @property
    def state_key(self) -> str:
        return "labrun.ResumableState"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.trainer = trainer

    def state_dict(self) -> dict[str, Any]:
        if self.trainer is None:
            return {}
        done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        epoch = self.trainer.current_epoch
        if done >= self.trainer.num_training_batches:  # an end-of-epoch checkpoint
            epoch, done = epoch + 1, 0
        return {
            "seed": self.seed,
            "epoch": epoch,
            "batch": done,
            "rng": rng_states(),
            "step_metrics": self._unlogged_step_metrics(),
        }

    def _unlogged_step_metrics(self) -> dict[str, Any]:
        """The step metrics Lightning logs right after `on_train_batch_end` (where the
        checkpoint is written); empty anywhere else."""
        trainer = self.trainer
        assert trainer is not None
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        connector = trainer._logger_connector
        if not trainer.training or progress.processed != progress.completed + 1:
            return {}
        if connector._first_loop_iter is None or not connector.should_update_logs:
            return {}
        from lightning.fabric.utilities.apply_func import convert_tensors_to_scalars

        metrics = convert_tensors_to_scalars(dict(connector.metrics["log"]))
        if not metrics:
            return {}
        metrics.setdefault("epoch", trainer.current_epoch)
        return {"step": trainer.fit_loop.epoch_loop._batches_that_stepped, "metrics": metrics}

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        flush_loggers(trainer)  # before the file exists: a resume from it skips stored steps

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The last epoch's epoch-level metrics are logged after its checkpoint was written, and
        # a resume from that checkpoint starts at this epoch: store them now.
        flush_loggers(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending:
            for logger in trainer.loggers:
                logger.log_metrics(self._pending["metrics"], step=self._pending["step"])
            self._pending = {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        fitting = self.trainer is not None and self.trainer.state.fn == "fit"
        if not state_dict or not fitting:  # testing a checkpoint: nothing to resume
            return
        set_rng_states(state_dict["rng"])
        self._pending = state_dict.get("step_metrics") or {}
        dm = getattr(self.trainer, "datamodule", None)
        if isinstance(dm, ResumableData):
            dm.resume_at(state_dict["epoch"], state_dict["batch"])
        log.info("resuming at epoch %d, batch %d", state_dict["epoch"], state_dict["batch"])


def flush_loggers(trainer: L.Trainer) -> None:
    """Write what buffering loggers (labrun's `RunLogger`) hold."""
    for logger in trainer.loggers:
        if callable(flush := getattr(logger, "flush", None)):
            flush()
