"""Embedding -> (Bi)LSTM -> pooling -> dropout -> Linear, trained as a LightningModule."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Annotated, Any, Literal

import torch
from annotated_types import Ge
from torch import nn

from labrun.config.rules import Decay, Positive, Probability
from labrun.data.preprocess import PAD_ID, UNK_ID
from labrun.models.averaging import average_into
from labrun.models.classifier import Classifier

Pooling = Literal["last", "mean", "max"]
EmbeddingInit = Literal["normal", "uniform"]


def init_embedding(embedding: nn.Embedding, how: EmbeddingInit) -> None:
    """`normal`: PyTorch's N(0, 1). `uniform`: U[-0.25, 0.25] as Kim (2014) draws random word
    vectors, small enough that training moves them; the padding row stays zero either way."""
    if how == "uniform":
        with torch.no_grad():
            embedding.weight.uniform_(-0.25, 0.25)
            if embedding.padding_idx is not None:
                embedding.weight[embedding.padding_idx].zero_()


class LSTMNet(nn.Module):
    """Token ids [B, T] and lengths [B] -> logits [B, C]; padding never reaches the LSTM."""

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        embedding_dim: Positive = 128,
        hidden_size: Positive = 128,
        num_layers: Positive = 1,
        bidirectional: bool = True,
        dropout: Probability = 0.3,
        pooling: Pooling = "max",
        embedding_init: EmbeddingInit = "normal",
    ) -> None:
        super().__init__()
        self.pooling = pooling
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        init_embedding(self.embedding, embedding_init)
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


class TokenClassifier(Classifier):
    """What a classifier over token ids shares, whatever its network: batches of (ids,
    lengths, labels), `self.net(ids, lengths)`, and the raw-text model it exports.

    `hparams.word_dropout` (e.g. 0.1): in training, each word becomes `<unk>` with that
    probability (Iyyer et al. 2015), so the net cannot lean on a few rare words; 0 draws
    nothing, so a run without it uses the random stream it always did.

    `hparams.ema_decay` (e.g. 0.99): an exponential moving average of the net's weights,
    updated after every optimizer step, is what validates, tests and is exported; the net
    itself trains on. Unset, there is no copy (`net_ema` is None)."""

    net: nn.Module
    net_ema: nn.Module | None

    def keep_average(self) -> None:
        """The moving average's copy of `self.net` (subclasses call it once the net is built)."""
        decay = self.hparams.get("ema_decay")
        self.net_ema = None if decay is None else copy.deepcopy(self.net).requires_grad_(False)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        net = self.net if self.training or self.net_ema is None else self.net_ema
        return net(ids, lengths)

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The step, then the net's constraints, then the average: all before the batch-end
        callbacks, so a checkpoint saved at a batch's end holds an average that matches its net
        (updated in `on_train_batch_end`, it ran after them, and a resume lost one update)."""
        super().optimizer_step(*args, **kwargs)
        self.constrain()
        if self.net_ema is not None:
            average_into(self.net_ema, self.net, self.hparams.ema_decay)

    def constrain(self) -> None:
        """What a net imposes on its weights after each step (Kim's max-norm); none here."""

    def unpack(
        self, batch: tuple[torch.Tensor, ...]
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        ids, lengths, labels = batch
        rate = self.hparams.get("word_dropout", 0.0)
        if self.training and rate:
            dropped = (torch.rand(ids.shape, device=ids.device) < rate) & (ids != PAD_ID)
            ids = ids.masked_fill(dropped, UNK_ID)
        return (ids, lengths), labels

    def export(self, datamodule: Any) -> nn.Module:
        """The model users load from MLflow: raw text in (see `TextClassifierPipeline`)."""
        from labrun.models.pipeline import TextClassifierPipeline

        net = copy.deepcopy(self.net if self.net_ema is None else self.net_ema).cpu().eval()
        return TextClassifierPipeline(net, datamodule.preprocessor, datamodule.class_names)


class TextClassifier(TokenClassifier):
    """A text classifier whose constructor arguments are its config (`conf/model/`).

    `vocab_size` and `num_classes` come from the data at run time; the optimizer and scheduler
    are partials from `conf/model/optimizer/` and `conf/model/scheduler/`.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        embedding_dim: Positive = 128,
        hidden_size: Positive = 128,
        num_layers: Positive = 1,
        bidirectional: bool = True,
        dropout: Probability = 0.3,
        pooling: Pooling = "max",
        l1: Annotated[float, Ge(0)] = 0.0,
        monitor: str = "val/acc",
        label_smoothing: Probability = 0.0,
        embedding_init: EmbeddingInit = "normal",
        word_dropout: Probability = 0.0,
        ema_decay: Decay | None = None,
        rdrop: Annotated[float, Ge(0)] = 0.0,
    ) -> None:
        super().__init__(num_classes, optimizer, scheduler, l1, monitor, label_smoothing)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.net = LSTMNet(
            vocab_size,
            num_classes,
            embedding_dim,
            hidden_size,
            num_layers,
            bidirectional,
            dropout,
            pooling,
            embedding_init,
        )
        self.keep_average()
