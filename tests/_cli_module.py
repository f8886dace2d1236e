"""A tiny LightningModule that tests load by class path (``tests._cli_module.Tiny``)."""

from __future__ import annotations

from lightning.pytorch import LightningModule
from torch import Tensor, nn


class Tiny(LightningModule):
    """Two convolutions and a pooling layer; ``channels`` is a saved hyperparameter."""

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(channels, 2),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # type: ignore[no-any-return]
