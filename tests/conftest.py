"""Shared fixtures: the embedded digits data, the published reference results, linear models.

Threads: every test process (this one and the ``catrs``, ``torchrun`` and interpreter
subprocesses the tests start, which inherit the environment) runs torch on
``CATRS_TEST_THREADS`` CPU threads, 1 by default, instead of torch's default of one thread per
core in every process. The tests' models are tiny (8x8 digits, batches of tens of samples), so
extra threads only add synchronisation, and processes that run at the same time (a test and
its subprocesses, two ``torchrun`` ranks) compete for the cores: measured on a 2-core machine,
four test files took 25 s of CPU time with one thread and 37 s with two, and under a load of 6
they took 28 s with one thread against 274 s with two (threads spinning at barriers while a
sibling waits for a core). One thread also makes every process compute bit for bit alike.
"""

from __future__ import annotations

import os

THREADS = os.environ.setdefault("CATRS_TEST_THREADS", "1")
for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_variable, THREADS)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_threads(int(THREADS))

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
    from catrs_plugin.plugins.registry import get_registry
    from catrs_plugin.train.checkpoint import save_checkpoint

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


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "compile: compiles with torch.compile for a minute or more; runs only with CATRS_TEST_COMPILE=1 (tox -e gpu)",
    )
    config.addinivalue_line(
        "markers",
        "cuda: needs a CUDA device (skipped without one); `pytest -m cuda` runs these alone "
        "(benchmarks/gpu_table.py does, with CATRS_TEST_COMPILE=1)",
    )


def pytest_collection_modifyitems(config, items):
    compile_skip = pytest.mark.skip(reason="a long torch.compile test: set CATRS_TEST_COMPILE=1 (tox -e gpu) to run it")
    cuda_skip = pytest.mark.skip(reason="needs a CUDA device")
    compiling, cuda = os.environ.get("CATRS_TEST_COMPILE") == "1", torch.cuda.is_available()
    for item in items:
        if item.get_closest_marker("cuda") and not cuda:
            item.add_marker(cuda_skip)
        if item.get_closest_marker("compile") and not compiling:
            item.add_marker(compile_skip)
