"""Kim (2014)'s sentence CNN: embedding -> parallel convolutions -> max over time -> dropout ->
Linear. The second text architecture, so that "LSTM or CNN here?" is a comparison away."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from annotated_types import Ge, Gt
from torch import nn

from labrun.config.rules import Decay, Positive, PositiveInts, Probability
from labrun.models.text_classifier import EmbeddingInit, TokenClassifier, init_embedding


class KimCNNNet(nn.Module):
    """Token ids [B, T] and lengths [B] -> logits [B, C].

    Each width's feature map is max-pooled over the windows that start inside the sentence,
    and whatever lies past its end reads as zero vectors (a sentence shorter than the widest
    filter is padded with zeros to it): a sentence gets the same logits whatever its batch
    pads it with. `wide` pads width - 1 zero vectors before and after the sentence, as Kim's
    code does, so every window that holds at least one word counts: a short question's first
    and last words get as many windows as its middle ones.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        embedding_dim: int = 300,
        filters: int = 100,
        widths: tuple[int, ...] = (3, 4, 5),
        dropout: float = 0.5,
        embedding_init: EmbeddingInit = "normal",
        wide: bool = False,
    ) -> None:
        super().__init__()
        self.widths = tuple(widths)
        self.wide = wide
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        init_embedding(self.embedding, embedding_init)
        self.convs = nn.ModuleList(nn.Conv1d(embedding_dim, filters, w) for w in self.widths)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(filters * len(self.widths), num_classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        widest = max(self.widths)
        if ids.size(1) < widest:
            ids = F.pad(ids, (0, widest - ids.size(1)))
        lengths = lengths.to(ids.device)
        words = torch.arange(ids.size(1), device=ids.device)[None, :] < lengths[:, None]
        x = (self.embedding(ids) * words[:, :, None]).transpose(1, 2)  # [B, E, T], padding 0
        if not self.wide:
            lengths = lengths.clamp(min=widest)
        pooled = []
        for width, conv in zip(self.widths, self.convs, strict=True):
            edge = width - 1 if self.wide else 0
            maps = F.relu(conv(F.pad(x, (edge, edge))))  # [B, F, T + 2 * edge - width + 1]
            inside = torch.arange(maps.size(2), device=ids.device)[None, :] <= (
                lengths[:, None] + 2 * edge - width
            )
            pooled.append(maps.masked_fill(~inside[:, None, :], float("-inf")).max(2).values)
        return self.head(self.dropout(torch.cat(pooled, 1)))


class KimCNN(TokenClassifier):
    """Kim (2014)'s CNN as a labrun classifier (`model=kim_cnn`).

    `hidden_size` is the number of feature maps per filter width (Kim: 100), the key the LSTM
    uses for its width, so a recipe's size and dropout apply to either architecture
    (`experiment=trec_lstm model=kim_cnn`). `max_norm` (Kim: 3) rescales each class's row of
    the output layer to at most that L2 norm after every optimizer step; unset, no constraint.
    `wide` pads each sentence's edges with width - 1 zero vectors, as Kim's code does.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        embedding_dim: Positive = 300,
        hidden_size: Positive = 100,
        widths: Annotated[tuple[int, ...], PositiveInts()] = (3, 4, 5),
        dropout: Probability = 0.5,
        l1: Annotated[float, Ge(0)] = 0.0,
        monitor: str = "val/acc",
        label_smoothing: Probability = 0.0,
        max_norm: Annotated[float, Gt(0)] | None = None,
        embedding_init: EmbeddingInit = "normal",
        wide: bool = False,
        word_dropout: Probability = 0.0,
        ema_decay: Decay | None = None,
        rdrop: Annotated[float, Ge(0)] = 0.0,
    ) -> None:
        super().__init__(num_classes, optimizer, scheduler, l1, monitor, label_smoothing)
        widths = tuple(int(w) for w in widths)  # not Hydra's ListConfig: checkpoints load
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])  # weights-only (torch>=2.6)
        self.net = KimCNNNet(
            vocab_size,
            num_classes,
            embedding_dim,
            hidden_size,
            widths,
            dropout,
            embedding_init,
            wide,
        )
        self.keep_average()

    def constrain(self) -> None:
        if self.hparams.max_norm is not None:
            with torch.no_grad():
                head = self.net.head.weight
                head.copy_(torch.renorm(head, 2, 0, self.hparams.max_norm))
