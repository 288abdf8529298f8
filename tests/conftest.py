"""Shared fixtures: the embedded digits data, the published reference results, linear models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "catrs-official-certify"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The published CAT-RS certification files (``../shared/reference``), or skip."""
    if not REFERENCE.is_dir():
        pytest.skip(f"published reference results not found at {REFERENCE}")
    return REFERENCE


@pytest.fixture(scope="session")
def digits():
    """(x_train, y_train, x_test, y_test) of the embedded digits data."""
    from catrs_adapters.datasets import load_digits

    return (*load_digits("train"), *load_digits("test"))


class LinearTwoClass(nn.Module):
    """``f(x) = 1[w.x + b > 0]`` as two logits; its smoothed radius is known in closed form."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone(), requires_grad=False)
        self.b = float(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.flatten(1) @ self.w.flatten() + self.b
        return torch.stack([-score, score], dim=1)


@pytest.fixture
def linear_two_class():
    return LinearTwoClass
