"""In-model normalisation: the first layer of every model, so that models see pixels in [0, 1]."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class NormalizeLayer(nn.Module):
    """Standardise each channel: ``(x - mean) / std``.

    The first layer of every model here, so that models see pixels in [0, 1] and noise is
    added in pixel space. Its tensors are not part of the state dict (as in the reference
    code's ``NormalizeLayer``), so checkpoints keep keys like ``1.conv1.weight``.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"mean and std must have one entry per channel and std > 0, got {mean}, {std}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
