"""Seed and thread count, applied before any work: the two things that change the last bits."""

from __future__ import annotations

import logging
import os
import random
from typing import Any

import lightning as L
import numpy as np
import torch

log = logging.getLogger(__name__)


def apply(seed: int, threads: int) -> None:
    """Seed python, numpy, torch and dataloader workers; fix the torch thread pools.

    1 and 2 intra-op threads give different float sums, so the count is config, not machine.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS on GPUs
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # already fixed in this process (a second task in one interpreter)
        if torch.get_num_interop_threads() != threads:
            log.warning(
                "inter-op threads stay %d (set once per process)", torch.get_num_interop_threads()
            )
    L.seed_everything(seed, workers=True, verbose=False)


def batch_seed(seed: int, epoch: int, batch: int) -> int:
    """A well-mixed 63-bit seed for one training batch (splitmix64 over the three numbers)."""
    x = (seed * 1_000_003 + epoch) * 1_000_003 + batch
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (x ^ (x >> 31)) >> 1


def reseed(seed: int) -> None:
    """python, numpy and torch (CPU, and CUDA once started) from one 63-bit seed.

    The same streams as `torch.manual_seed`, at a hundredth of its cost: that call also queues
    a lazy CUDA seeding, capturing a stack trace each time (~0.1 ms, paid on every batch).
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)
    elif torch.backends.mps.is_available():
        torch.mps.manual_seed(seed)


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

    Every training batch reseeds python, numpy and torch from (seed, epoch, batch), so dropout
    and noise never depend on what ran before: not on a crash, not on a validation pass, not on
    how many processes share a machine. Each checkpoint also carries every RNG state and the
    position in the data order; loading one restores the states and tells the datamodule where
    the interrupted epoch stopped, so the resumed pass starts at the next batch.

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

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # DDP ranks draw different dropout masks; rank 0 keeps the single-process stream
        reseed(batch_seed(self.seed + 7919 * trainer.global_rank, trainer.current_epoch, batch_idx))

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
        if dm is not None and hasattr(dm, "resume_at"):
            dm.resume_at(state_dict["epoch"], state_dict["batch"])
        log.info("resuming at epoch %d, batch %d", state_dict["epoch"], state_dict["batch"])


def flush_loggers(trainer: L.Trainer) -> None:
    """Write what buffering loggers (labrun's `RunLogger`) hold."""
    for logger in trainer.loggers:
        if callable(flush := getattr(logger, "flush", None)):
            flush()
