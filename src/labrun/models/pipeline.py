"""The model users load from MLflow: raw text in, class scores and names out."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class TextClassifierPipeline(nn.Module):
    """Preprocessing and network in one picklable module.

    `forward(["some text", ...])` returns logits [B, C]; `predict` returns class names.
    `preprocessor` is the one used in training (cleaning, tokenizer, vocabulary).
    """

    # what MLflow stores as the model's input example (its signature: strings in, logits out)
    input_example = ["How far is it from Denver to Aspen ?", "a gripping , funny film"]

    def __init__(self, net: nn.Module, preprocessor: Any, class_names: list[str]) -> None:
        super().__init__()
        self.net = net
        self.preprocessor = preprocessor
        self.class_names = list(class_names)

    def forward(self, texts: list[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        seqs = [torch.tensor(self.preprocessor(t), dtype=torch.long) for t in texts]
        lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
        ids = nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=0)
        device = next(self.net.parameters()).device
        return self.net(ids.to(device), lengths)

    @torch.no_grad()
    def predict(self, texts: list[str]) -> list[str]:
        was_training = self.training
        self.eval()
        try:
            return [self.class_names[i] for i in self(texts).argmax(-1).tolist()]
        finally:
            self.train(was_training)
