"""Embedding -> (Bi)LSTM -> pooling -> dropout -> Linear, trained as a LightningModule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
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

Pooling = Literal["last", "mean", "max"]


class LSTMNet(nn.Module):
    """Token ids [B, T] and lengths [B] -> logits [B, C]; padding never reaches the LSTM."""

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        embedding_dim: int = 128,
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.3,
        pooling: Pooling = "max",
    ) -> None:
        super().__init__()
        self.pooling = pooling
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.lstm = nn.LSTM(
            embedding_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.dropout(self.embedding(ids))
        packed = nn.utils.rnn.pack_padded_sequence(
            x, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        out, (h, _) = self.lstm(packed)
        if self.pooling == "last":
            pooled = torch.cat([h[-2], h[-1]], dim=1) if self.lstm.bidirectional else h[-1]
        else:
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
            mask = (
                torch.arange(out.size(1), device=out.device)[None, :]
                < lengths.to(out.device)[:, None]
            )
            mask = mask.unsqueeze(-1)
            if self.pooling == "mean":
                pooled = (out * mask).sum(1) / mask.sum(1).clamp(min=1)
            else:
                pooled = out.masked_fill(~mask, float("-inf")).max(1).values
        return self.head(self.dropout(pooled))


def _metrics(num_classes: int, prefix: str) -> MetricCollection:
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


class TextClassifier(L.LightningModule):
    """A text classifier whose constructor arguments are its config (`conf/model/`).

    `vocab_size` and `num_classes` come from the data at run time. The optimizer and scheduler
    are partials from `conf/optimizer/` and `conf/scheduler/`; L2 is the optimizer's
    weight_decay, `l1` adds an L1 penalty on the weights, and gradient clipping is the
    Trainer's `gradient_clip_val`.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        embedding_dim: int = 128,
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.3,
        pooling: Pooling = "max",
        l1: float = 0.0,
        monitor: str = "val/acc",
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.net = LSTMNet(
            vocab_size,
            num_classes,
            embedding_dim,
            hidden_size,
            num_layers,
            bidirectional,
            dropout,
            pooling,
        )
        self.train_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.val_metrics = _metrics(num_classes, "val/")
        self.test_metrics = _metrics(num_classes, "test/")
        self.test_confusion = MulticlassConfusionMatrix(num_classes=num_classes)
        self.test_roc = MulticlassROC(
            num_classes=num_classes
        )  # exact; binned ROC allocates N x bins under deterministic mode
        self.test_results: dict[str, Any] = {}

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.net(ids, lengths)

    def _step(
        self, batch: tuple[torch.Tensor, ...]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, lengths, labels = batch
        logits = self(ids, lengths)
        return F.cross_entropy(logits, labels), logits, labels

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        loss, logits, labels = self._step(batch)
        if self.hparams.l1 > 0:
            l1 = sum(p.abs().sum() for name, p in self.net.named_parameters() if "weight" in name)
            loss = loss + self.hparams.l1 * l1
        self.train_acc(logits, labels)
        self.log(
            "train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(labels)
        )
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, batch_size=len(labels))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        loss, logits, labels = self._step(batch)
        self.val_metrics.update(logits.softmax(-1), labels)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(labels))

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), prog_bar=False)
        self.val_metrics.reset()

    def test_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        loss, logits, labels = self._step(batch)
        probs = logits.softmax(-1)
        self.test_metrics.update(probs, labels)
        self.test_confusion.update(probs, labels)
        self.test_roc.update(probs, labels)
        self.log("test/loss", loss, batch_size=len(labels))

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute())
        fpr, tpr, _ = self.test_roc.compute()
        self.test_results = {
            "confusion": self.test_confusion.compute().cpu(),
            "roc": ([f.cpu() for f in fpr], [t.cpu() for t in tpr]),
        }
        for metric in (self.test_metrics, self.test_confusion, self.test_roc):
            metric.reset()

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameters())
        if not self.scheduler_factory:  # `scheduler=none` composes to an empty node
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": scheduler,
                "monitor": self.hparams.monitor,
                "interval": "epoch",
            },
        }
