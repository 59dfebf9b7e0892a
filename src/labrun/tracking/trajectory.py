"""A run's trajectory fingerprint: enough of every training step to find the first step where
two runs of one config part, small enough to keep for every run.

Per training batch: a checksum of the batch (what the step read), the loss (what its forward
gave) and the gradient norm (what its backward gave); every `every` batches, and before the
first, the parameters' L2 norm and a sha256 of their bytes (what the update did). Where two
fingerprints first differ says what to suspect: the initial weights (seed, init code), the
batch (data order), the first forward (kernels, hardware, packages), a later step (threads,
nondeterministic ops, a resume that was not exact).

Values are kept as tensors while training (no device sync per step) and turned into numbers
when the fingerprint is stored or checkpointed: it travels in every checkpoint, so a resumed
run's fingerprint is the whole run's.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from typing import Any

import lightning as L
import numpy as np
import torch

ARTIFACT = "trajectory/fingerprint.json"
SYNC_EVERY = 100  # steps between reading the values kept as tensors


def _shortest(value: float | None) -> float | None:
    """A float32 value as the shortest decimal that gives it back: half the bytes of float64."""
    if value is None or math.isnan(value):
        return None
    return float(str(np.float32(value)))


def batch_checksum(batch: Any) -> int | torch.Tensor:
    """crc32 of every tensor in the batch (on a GPU, a float64 sum, read later)."""
    tensors = []

    def walk(node: Any) -> None:
        if isinstance(node, torch.Tensor):
            tensors.append(node)
        elif isinstance(node, (list, tuple)):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for key in sorted(node):
                walk(node[key])

    walk(batch)
    if any(t.is_cuda for t in tensors):
        return sum(t.detach().double().sum() for t in tensors)  # type: ignore[return-value]
    crc = 0
    for t in tensors:
        crc = zlib.crc32(t.detach().contiguous().numpy().tobytes(), crc)
    return crc


def param_checksum(module: torch.nn.Module) -> list[Any]:
    """[L2 norm, sha256 of the bytes (16 hex)] of every parameter, in order."""
    digest = hashlib.sha256()
    squares = 0.0
    for p in module.parameters():
        data = p.detach().float().cpu()
        squares += float(data.double().pow(2).sum())
        digest.update(data.contiguous().numpy().tobytes())
    return [math.sqrt(squares), digest.hexdigest()[:16]]


def _number(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return _shortest(float(value))
    return value


class Trajectory(L.Callback):
    """Records the fingerprint as training runs (rank 0's view; every rank records its own)."""

    def __init__(self, every: int = 50) -> None:
        self.every = every
        self.batch: list[Any] = []  # per training batch, in order
        self.loss: list[Any] = []
        self.grad_norm: list[Any] = []
        self.params: dict[str, list[Any]] = {}  # "init" and str(batch index) -> checksum
        self._grad_squares: torch.Tensor | None = None

    @property
    def state_key(self) -> str:
        return "labrun.Trajectory"

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.loss and "init" not in self.params:
            self.params["init"] = param_checksum(pl_module)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self.batch.append(batch_checksum(batch))
        self._grad_squares = None

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: Any
    ) -> None:
        params = (p for group in optimizer.param_groups for p in group["params"])
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        squares = torch.stack([g.detach().float().pow(2).sum() for g in grads]).sum()
        # several optimizers in one step (a GAN): one norm over all their gradients
        self._grad_squares = squares if self._grad_squares is None else self._grad_squares + squares

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        self.loss.append(loss.detach() if isinstance(loss, torch.Tensor) else None)
        squares = self._grad_squares
        self.grad_norm.append(None if squares is None else squares.sqrt())
        index = len(self.loss) - 1
        if self.every and index % self.every == 0:
            self.params[str(index)] = param_checksum(pl_module)
        if index % SYNC_EVERY == 0:  # a GPU's scalars read now and then, not held by the 100k
            self._read()

    def _read(self) -> None:
        self.batch = [float(v) if isinstance(v, torch.Tensor) else v for v in self.batch]
        self.loss = [_number(v) for v in self.loss]
        self.grad_norm = [_number(v) for v in self.grad_norm]

    def as_dict(self) -> dict[str, Any]:
        """The fingerprint in plain numbers (tensors read now)."""
        self._read()
        return {
            "version": 1,
            "every": self.every,
            "steps": len(self.loss),
            "batch": self.batch,
            "loss": self.loss,
            "grad_norm": self.grad_norm,
            "params": self.params,
        }

    def dumps(self) -> str:
        """Compact JSON: ~20 bytes per step (see BENCHMARKS.md for the measured size)."""
        return json.dumps(self.as_dict(), separators=(",", ":"))

    def state_dict(self) -> dict[str, Any]:
        return self.as_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.every = state.get("every", self.every)
        self.batch = list(state.get("batch", []))
        self.loss = list(state.get("loss", []))
        self.grad_norm = list(state.get("grad_norm", []))
        self.params = dict(state.get("params", {}))
