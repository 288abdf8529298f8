"""CIFAR-10 and CIFAR-100 from the official "python version" pickle batches.

Layout (as torchvision and RobustBench expect it under ``data_dir``)::

    data_dir/cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch
    data_dir/cifar-100-python/train, test

Each batch is a pickled dict with ``data`` (``n x 3072`` uint8, channels first, row-major) and
``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100). The pickles are read with an unpickler
that only rebuilds numpy arrays and plain containers, so a tampered file cannot run code.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from catrs_adapters.data._files import data_root, require_file, take
from catrs_plugin.utils.reading import class_labels, image_bytes, parsing
from catrs_plugin.utils.validation import check_choice

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar.html (cifar-10-python.tar.gz)"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar.html (cifar-100-python.tar.gz)"

#: Number of classes of each label key: CIFAR-10's ``labels``, CIFAR-100's ``fine_labels`` (and ``coarse_labels``).
CLASSES = {"labels": 10, "fine_labels": 100, "coarse_labels": 20}

_CIFAR10_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
_CIFAR100_FILES = {"train": ("train",), "test": ("test",)}

_NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch holds only arrays and lists")


def read_cifar_batch(path: str | os.PathLike, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickle batch as ``(x uint8 (n, 3, 32, 32), y int64 (n,))``.

    Raises
    ------
    ValueError
        If the file is not a CIFAR batch (damaged, wrong keys or shapes, or objects other than
        arrays), its images are not bytes (e.g. floats, which are never cast), or its labels are
        not class indices of the data set (:data:`CLASSES` of ``label_key``).
    """
    with parsing(path, "CIFAR batch", f"a CIFAR python batch with 'data' and {label_key!r}"):
        with open(path, "rb") as handle:
            batch = _ArrayUnpickler(handle, encoding="latin1").load()
        data, labels = np.asarray(batch["data"]), np.asarray(batch[label_key])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.ndim != 1 or len(labels) != len(data):
        raise ValueError(
            f"{str(path)!r}: expected data of shape (n, 3072) and n labels, got {data.shape} and {labels.shape}"
        )
    what = f"CIFAR batch {str(path)!r}"
    return image_bytes(data, what).reshape(-1, 3, 32, 32), class_labels(labels, CLASSES[label_key], what)


def read_cifar_split(
    folder: Path, files: tuple[str, ...], label_key: str, name: str, url: str, n_examples: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n_examples`` images of ``files`` in order, as ``(x uint8 (n, 3, 32, 32), y int64 (n,))``."""
    parts = [read_cifar_batch(require_file(folder / file, name, url), label_key) for file in files]
    return take(n_examples, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def cifar10_split(split: str, data_dir: str | os.PathLike | None, n_examples: int | None):
    """CIFAR-10's ``split`` as uint8 images and int64 labels (see :func:`read_cifar_split`)."""
    check_choice(split, tuple(_CIFAR10_FILES), "split")
    folder = data_root(data_dir) / "cifar-10-batches-py"
    return read_cifar_split(folder, _CIFAR10_FILES[split], "labels", "CIFAR-10", CIFAR10_URL, n_examples)


def cifar100_split(split: str, data_dir: str | os.PathLike | None, n_examples: int | None):
    """CIFAR-100's ``split`` (fine labels) as uint8 images and int64 labels."""
    check_choice(split, tuple(_CIFAR100_FILES), "split")
    folder = data_root(data_dir) / "cifar-100-python"
    return read_cifar_split(folder, _CIFAR100_FILES[split], "fine_labels", "CIFAR-100", CIFAR100_URL, n_examples)


def read_cifar10(
    n_examples: int | None = None, data_dir: str | os.PathLike | None = None, split: str = "test"
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-10 as numpy arrays, the reader of the registered ``cifar10`` dataset.

    For RobustBench's ``load_cifar10`` (torch tensors, ``transforms_test``) see
    :func:`~catrs_adapters.data.robustbench_loaders.load_cifar10`.

    Returns
    -------
    x : numpy.ndarray
        ``(n, 3, 32, 32)`` float32 in [0, 1] (50,000 train or 10,000 test images).
    y : numpy.ndarray
        ``(n,)`` int64 in 0..9.
    """
    x, y = cifar10_split(split, data_dir, n_examples)
    return x.astype(np.float32) / 255.0, y


def read_cifar100(
    n_examples: int | None = None, data_dir: str | os.PathLike | None = None, split: str = "test"
) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR-100 with its 100 fine labels as numpy arrays (as :func:`read_cifar10`)."""
    x, y = cifar100_split(split, data_dir, n_examples)
    return x.astype(np.float32) / 255.0, y
