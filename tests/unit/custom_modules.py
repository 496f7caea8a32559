"""Networks that tests reach through `package.module:ClassName` architecture paths."""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """One hidden layer, built the way the trainer builds user architectures."""

    def __init__(self, input_dim: int, output_dim: int, hidden: int = 8) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_dim, hidden), nn.Tanh(), nn.Linear(hidden, output_dim)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class NotAModule:
    """A class that the trainer must refuse as an architecture."""

    def __init__(self, input_dim: int, output_dim: int) -> None:
        self.input_dim = input_dim
        self.output_dim = output_dim
