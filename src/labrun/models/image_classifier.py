"""A LeNet image classifier as a recipe of its own (`experiment=mnist_features`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from labrun.metrics.features import LeNet
from labrun.models.classifier import Classifier


class ImageClassifier(Classifier):
    """LeNet on MNIST-style images (`conf/model/image_classifier.yaml`)."""

    def __init__(
        self,
        channels: int,
        image_size: int,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        width: int = 32,
        num_features: int = 128,
        dropout: float = 0.3,
        l1: float = 0.0,
        monitor: str = "val/acc",
    ) -> None:
        super().__init__(num_classes, optimizer, scheduler, l1, monitor)
        self.save_hyperparameters(ignore=["optimizer", "scheduler"])
        self.net = LeNet(channels, image_size, num_classes, width, num_features, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def unpack(
        self, batch: tuple[torch.Tensor, ...]
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        x, y = batch
        return (x,), y

    def export(self, datamodule: Any) -> nn.Module:
        import copy

        net = copy.deepcopy(self.net).cpu().eval()
        channels, size = self.hparams.get("channels", 1), self.hparams.get("image_size", 28)
        net.input_example = torch.zeros(1, channels, size, size)  # MLflow's signature: images in
        return net
