"""CIFAR-10-C (Hendrycks and Dietterich, 2019) as RobustBench lays it out, and CIFAR-100-C alike.

Layout under ``data_dir`` (the extracted ``CIFAR-10-C.tar``)::

    data_dir/CIFAR-10-C/labels.npy          (50,000,) labels, the test labels repeated 5 times
    data_dir/CIFAR-10-C/<corruption>.npy    (50,000, 32, 32, 3) uint8, one per corruption

``CIFAR-100-C.tar`` extracts to ``data_dir/CIFAR-100-C/`` with the same files (fine labels).

Rows ``(s - 1) * 10,000`` to ``s * 10,000`` hold severity ``s`` (1 to 5). The number of rows
per severity is read from ``labels.npy`` (a fifth of its length), so smaller files in the
same format work too. Row indices of the whole file are the example indices of the CAT-RS
paper's CIFAR-10-C results (every 100th of the 50,000).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from catrs_adapters.data._files import data_root, require_file
from catrs_plugin.results.corruptions import SEVERITIES
from catrs_plugin.utils.reading import class_labels, load_npy
from catrs_plugin.utils.validation import check_choice

CIFAR10C_URL = "https://zenodo.org/records/2535967 (CIFAR-10-C.tar)"

#: The corrupted CIFAR test sets: folder under ``data_dir`` -> where it is published.
CORRUPTED_CIFAR = {"CIFAR-10-C": CIFAR10C_URL, "CIFAR-100-C": "https://zenodo.org/records/3555552 (CIFAR-100-C.tar)"}

#: Classes of each corrupted CIFAR test set.
CLASSES = {"CIFAR-10-C": 10, "CIFAR-100-C": 100}

#: The 15 corruptions of the CIFAR-10-C benchmark, in ``robustbench.data.CORRUPTIONS``' order.
CORRUPTIONS = (
    "shot_noise", "motion_blur", "snow", "pixelate", "gaussian_noise", "defocus_blur", "brightness", "fog",
    "zoom_blur", "frost", "glass_blur", "impulse_noise", "contrast", "jpeg_compression", "elastic_transform",
)


def cifar10c_dir(data_dir: str | os.PathLike | None, dataset: str = "CIFAR-10-C") -> Path:
    """The ``CIFAR-10-C`` (or ``dataset``'s) folder under ``data_dir``."""
    return data_root(data_dir) / check_choice(dataset, tuple(CORRUPTED_CIFAR), "dataset")


def corruption_arrays(
    corruption: str, data_dir: str | os.PathLike | None = None, dataset: str = "CIFAR-10-C"
) -> tuple[np.ndarray, np.ndarray, int]:
    """One corruption file as stored: ``(labels, images, rows per severity)``.

    ``labels`` is ``labels.npy`` in its own dtype (uint8 in the published files), checked to hold
    class indices of the data set (:data:`CLASSES`), ``images`` the ``(5 * rows, 32, 32, 3)`` uint8
    array, memory-mapped. ``dataset`` is ``"CIFAR-10-C"`` or ``"CIFAR-100-C"``.
    """
    check_choice(corruption, CORRUPTIONS, "corruption")
    folder = cifar10c_dir(data_dir, dataset)
    published = CORRUPTED_CIFAR[dataset]
    labels = load_npy(require_file(folder / "labels.npy", dataset, published), f"{dataset} labels")
    images = load_npy(require_file(folder / f"{corruption}.npy", dataset, published), f"{dataset} images",
                      mmap_mode="r")
    if labels.ndim != 1 or len(labels) % len(SEVERITIES) or images.shape != (len(labels), 32, 32, 3) \
            or images.dtype != np.uint8:
        raise ValueError(
            f"{dataset}: {str(folder / (corruption + '.npy'))!r} must hold (n, 32, 32, 3) uint8 images with n = "
            f"len(labels.npy) = 5 x rows per severity, got {images.dtype} {images.shape} and {len(labels)} labels"
        )
    class_labels(labels, CLASSES[dataset], f"{dataset} {str(folder / 'labels.npy')!r}")  # kept in their dtype
    return labels, images, len(labels) // len(SEVERITIES)


def check_severity(severity: int) -> int:
    """Return ``severity`` if it is one of the benchmark's severities, 1 to 5."""
    if severity not in SEVERITIES:
        raise ValueError(f"severity must lie in 1..5, got {severity!r}")
    return severity


def severity_block(severity: int, per_severity: int) -> np.ndarray:
    """Row indices of ``severity`` (1 to 5) in a corruption file."""
    check_severity(severity)
    return np.arange((severity - 1) * per_severity, severity * per_severity)


def read_corruption(
    corruption: str, data_dir: str | os.PathLike | None = None, severities: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of one corruption file at the chosen severities, in file order.

    Parameters
    ----------
    corruption : str
        One of :data:`CORRUPTIONS`.
    data_dir : str or os.PathLike, optional
        Folder holding ``CIFAR-10-C/`` (default ``./data``).
    severities : sequence of int, optional
        Severities to keep (default: all five).

    Returns
    -------
    x : numpy.ndarray
        ``(n, 3, 32, 32)`` float32 in [0, 1].
    y : numpy.ndarray
        ``(n,)`` int64.
    rows : numpy.ndarray
        ``(n,)`` int64 row indices in the whole file (``(severity - 1) * 10,000 + i``).
    """
    chosen = SEVERITIES if severities is None else tuple(severities)
    if not chosen or any(severity not in SEVERITIES for severity in chosen):
        raise ValueError(f"severities must lie in 1..5, got {list(chosen)}")
    labels, images, per_severity = corruption_arrays(corruption, data_dir)
    rows = np.concatenate([severity_block(s, per_severity) for s in sorted(set(chosen))])
    x = np.transpose(np.asarray(images[rows]), (0, 3, 1, 2)).astype(np.float32) / 255.0
    return x, labels[rows].astype(np.int64), rows
