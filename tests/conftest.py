"""Shared fixtures: the embedded digits data, the published reference results, linear models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

REFERENCE = Path(__file__).resolve().parent / "data" / "catrs-official-certify"


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The published CAT-RS certification files shipped in ``tests/data`` (see its README).

    They are part of the project: a missing folder is a broken checkout or source
    distribution, so the tests that need it fail instead of skipping.
    """
    if not (REFERENCE / "LICENSE").is_file() or not any(REFERENCE.glob("cifar10/*/noise_0.25.tsv")):
        pytest.fail(f"the published reference results are missing from {REFERENCE} (tests/data/README.md "
                    "says where they come from); restore them from the repository", pytrace=False)
    return REFERENCE


@pytest.fixture(scope="session")
def digits():
    """(x_train, y_train, x_test, y_test) of the embedded digits data."""
    from catrs_adapters.datasets import load_digits

    return (*load_digits("train"), *load_digits("test"))


@pytest.fixture(scope="session")
def digits_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint of an untrained (seed 0) ``digits_cnn``, in our format."""
    from catrs_plugin.checkpoint import save_checkpoint
    from catrs_plugin.registry import get_registry

    torch.manual_seed(0)
    model = get_registry().create_model("digits_cnn", "digits")
    path = tmp_path_factory.mktemp("digits_checkpoint") / "digits_cnn.pt"
    save_checkpoint(path, {"arch": "digits_cnn", "dataset": "digits", "state_dict": model.state_dict()})
    return path


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
