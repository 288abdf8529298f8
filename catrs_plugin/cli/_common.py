"""Options and helpers shared by several ``catrs`` sub-commands."""

from __future__ import annotations

import argparse

import numpy as np
import torch

from catrs_plugin.registry import get_registry
from catrs_plugin.specs import DatasetSpec



def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device``: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1`` ..."""
    parser.add_argument("--device", default="auto", help="torch device; auto picks CUDA when available (default: auto)")


def resolve_device(name: str) -> torch.device:
    """The device named on the command line (``auto``: CUDA if available, else CPU)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}") from None


def batch_size_argument(text: str) -> int | str:
    """argparse type of ``--batch`` options: an integer (checked where it is used) or ``auto``."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer or auto, got {text!r}") from None


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data-dir``: where file-based datasets live (ignored by the embedded digits data)."""
    parser.add_argument("--data-dir", default=None, help="directory holding the dataset files")


def load_split(dataset: str, split: str, data_dir: str | None) -> tuple[DatasetSpec, np.ndarray, np.ndarray]:
    """The dataset's spec and one split as numpy arrays."""
    spec = get_registry().dataset(dataset)
    if split not in spec.splits:
        raise ValueError(f"--split must be one of {', '.join(spec.splits)} for dataset {dataset!r}, got {split!r}")
    x, y = spec.load(split, data_dir=data_dir)
    return spec, x, y
