"""What every classifier shares: loss, torchmetrics for val and test, optimizer wiring."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAUROC,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
    MulticlassROC,
)


def classification_metrics(num_classes: int, prefix: str) -> MetricCollection:
    kw: dict[str, Any] = {"num_classes": num_classes}
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(average="micro", **kw),
            "precision": MulticlassPrecision(average="macro", **kw),
            "recall": MulticlassRecall(average="macro", **kw),
            "f1": MulticlassF1Score(average="macro", **kw),
            "auroc": MulticlassAUROC(average="macro", **kw),
        },
        prefix=prefix,
    )


def symmetric_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(KL(p_a || p_b) + KL(p_b || p_a)) / 2 of two logit batches, averaged over the batch:
    R-Drop's pull between two dropout passes of one input (Liang et al. 2021)."""
    log_a, log_b = F.log_softmax(a, dim=-1), F.log_softmax(b, dim=-1)
    pointwise = (log_a.exp() - log_b.exp()) * (log_a - log_b)  # the sum of both KL terms
    return pointwise.sum(-1).mean() / 2


class Classifier(L.LightningModule):
    """Cross-entropy training with accuracy, macro precision/recall/F1 and one-vs-rest AUROC.

    Subclasses build `self.net` and say how a batch splits into inputs and labels (`unpack`).
    L2 is the optimizer's weight_decay, `l1` adds an L1 penalty on the weights, gradient
    clipping is the Trainer's `gradient_clip_val`, and `label_smoothing` (e.g. 0.1) trains
    towards (1 - s) on the label and s spread over all classes. A subclass whose hparams hold
    `rdrop` (e.g. 1.0) trains each batch twice under different dropout masks: the mean of the
    two losses plus `rdrop` times their symmetric KL (R-Drop, Liang et al. 2021).
    """

    # What validation logs (labrun.contracts.DeclaresMetrics): `classification_metrics` + loss.
    validation_metrics = (
        "val/loss",
        "val/acc",
        "val/precision",
        "val/recall",
        "val/f1",
        "val/auroc",
    )

    def __init__(
        self,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        l1: float = 0.0,
        monitor: str = "val/acc",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.l1 = l1
        self.monitor = monitor
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_metrics = classification_metrics(num_classes, "val/")
        self.test_metrics = classification_metrics(num_classes, "test/")
        self.test_confusion = MulticlassConfusionMatrix(num_classes=num_classes)
        # Exact ROC: the binned one allocates N x bins x classes under deterministic mode.
        self.test_roc = MulticlassROC(num_classes=num_classes)
        self.test_results: dict[str, Any] = {}
        self._reset_epoch()

    def unpack(self, batch: Any) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        raise NotImplementedError

    def _step(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        inputs, labels = self.unpack(batch)
        logits = self(*inputs)
        return F.cross_entropy(logits, labels), logits, labels

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        inputs, labels = self.unpack(batch)
        logits = self(*inputs)
        # smoothing shapes the training target only: val and test losses stay plain cross-entropy
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        rdrop = self.hparams.get("rdrop", 0.0)
        if rdrop:  # a second pass under other dropout masks; unset, nothing more is drawn
            second = self(*inputs)
            again = F.cross_entropy(second, labels, label_smoothing=self.label_smoothing)
            loss = (loss + again) / 2 + rdrop * symmetric_kl(logits, second)
        if self.l1 > 0:
            weights = (p for name, p in self.net.named_parameters() if "weight" in name)
            loss = loss + self.l1 * sum(p.abs().sum() for p in weights)
        n = len(labels)
        # The epoch's loss and accuracy accumulate here and are logged once, at its end: a
        # `self.log` costs ~0.5 ms, over 1% of a small model's step, so the step loss is handed
        # to Lightning only on the steps it writes (every step while a progress bar shows it).
        self.train_acc.update(logits, labels)
        self._epoch_loss = self._epoch_loss + loss.detach() * n
        self._epoch_count += n
        trainer = self.trainer
        if (
            trainer.progress_bar_callback is not None
            or (self.global_step + 1) % trainer.log_every_n_steps == 0
            or trainer.should_stop
        ):
            self.log("train/loss_step", loss, prog_bar=True, batch_size=n)
        return loss

    def on_train_epoch_end(self) -> None:
        mean = self._epoch_loss / max(1, self._epoch_count)
        self.log("train/loss_epoch", mean, sync_dist=True)
        self.log("train/acc", self.train_acc.compute())  # torchmetrics syncs it across ranks
        self._reset_epoch()

    def _reset_epoch(self) -> None:
        self.train_acc.reset()
        self._epoch_loss: torch.Tensor | float = 0.0
        self._epoch_count = 0

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A mid-epoch checkpoint carries the epoch's running loss and accuracy, so a resumed
        epoch ends with the same `train/loss_epoch` and `train/acc` as an uninterrupted one."""
        trainer = self._trainer
        if trainer is None or not trainer.training or not self._epoch_count:
            return
        if trainer.fit_loop.epoch_loop.batch_progress.current.processed >= (
            trainer.num_training_batches
        ):
            return  # the epoch is over: the next one starts from zero
        checkpoint["labrun.train_epoch"] = {
            "loss": torch.as_tensor(self._epoch_loss).detach().cpu(),
            "count": self._epoch_count,
            "acc": {k: v.detach().cpu() for k, v in self.train_acc.metric_state.items()},
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._reset_epoch()
        if state := checkpoint.get("labrun.train_epoch"):
            self._epoch_loss = state["loss"].to(self.device)
            self._epoch_count = state["count"]
            for name, value in state["acc"].items():
                setattr(self.train_acc, name, value.to(self.device))

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, logits, labels = self._step(batch)
        self.val_metrics.update(logits.softmax(-1), labels)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(labels), sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        self.log_dict(
            self.val_metrics.compute(), sync_dist=True
        )  # synced already: silences a warning
        self.val_metrics.reset()

    def test_step(self, batch: Any, batch_idx: int) -> None:
        loss, logits, labels = self._step(batch)
        probs = logits.softmax(-1)
        self.test_metrics.update(probs, labels)
        self.test_confusion.update(probs, labels)
        self.test_roc.update(probs, labels)
        self.log("test/loss", loss, batch_size=len(labels), sync_dist=True)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute(), sync_dist=True)
        fpr, tpr, _ = self.test_roc.compute()
        self.test_results = {
            "confusion": self.test_confusion.compute().cpu(),
            "roc": ([f.cpu() for f in fpr], [t.cpu() for t in tpr]),
        }
        for metric in (self.test_metrics, self.test_confusion, self.test_roc):
            metric.reset()

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """The Trainer's `gradient_clip_val`; under FSDP by the sharded module's own
        `clip_grad_norm_` (it reduces the norm over the shards), which Lightning's FSDP
        precision refuses to do for `trainer=fsdp`."""
        from lightning.pytorch.strategies import FSDPStrategy

        sharded = isinstance(self.trainer.strategy, FSDPStrategy)
        if sharded and gradient_clip_val and gradient_clip_algorithm in (None, "norm"):
            self.trainer.strategy.model.clip_grad_norm_(gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if not self.scheduler_factory:  # `scheduler=none` composes to an empty node
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor, "interval": "epoch"},
        }
