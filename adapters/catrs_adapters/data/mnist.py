"""MNIST from the original IDX files (LeCun et al.), as torchvision lays them out.

Layout under ``data_dir``::

    data_dir/MNIST/raw/train-images-idx3-ubyte   train-labels-idx1-ubyte
    data_dir/MNIST/raw/t10k-images-idx3-ubyte    t10k-labels-idx1-ubyte

Each file may also be the published gzip (``.gz`` suffix). An IDX file is a big-endian header
(two zero bytes, type code ``0x08`` for unsigned bytes, number of dimensions, one 32-bit size
per dimension) followed by the raw values.
"""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path

import numpy as np

from catrs_adapters.data._files import data_root, require_file, take
from catrs_plugin.utils.reading import FormatError, class_labels, gzip_size, parsing, read_exactly
from catrs_plugin.utils.validation import check_choice

MNIST_URL = "https://yann.lecun.com/exdb/mnist/ (mirror: https://ossci-datasets.s3.amazonaws.com/mnist/)"

_PREFIX = {"train": "train", "test": "t10k"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An unsigned-byte IDX file (optionally gzipped) as a uint8 array of its declared shape.

    Nothing beyond the declared size is read: the declared size is checked against the file's
    size, or a gzip file's against the uncompressed size its trailer records, before the body is
    read, and at most one byte more than the header declares is ever decompressed (a "gzip bomb"
    never fills the memory).

    Raises
    ------
    ValueError
        If the file is not an unsigned-byte IDX file (a damaged gzip, another header, a body
        that does not match the declared shape).
    """
    path = Path(path)
    gzipped = path.suffix == ".gz"
    with parsing(path, "MNIST file", "an IDX file"), (gzip.open if gzipped else open)(path, "rb") as handle:
        head = handle.read(4)
        if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08:
            raise FormatError(f"it is not an unsigned-byte IDX file (header {head.hex()})")
        ndim = head[3]
        dims = handle.read(4 * ndim)
        if len(dims) < 4 * ndim:
            raise FormatError(f"its IDX header declares {ndim} dimensions but the file ends after {4 + len(dims)} "
                              "bytes")
        shape = tuple(int(v) for v in np.frombuffer(dims, dtype=">u4"))
        size = math.prod(shape)
        total = 4 + 4 * ndim + size
        if gzipped and (total >= 2**32 or gzip_size(path) != total):
            raise FormatError(f"its IDX header declares shape {shape} ({total} bytes), but the gzip trailer records "
                              f"{gzip_size(path)} uncompressed bytes")
        if not gzipped and path.stat().st_size != total:
            raise FormatError(f"its IDX header declares shape {shape} ({total} bytes), but the file has "
                              f"{path.stat().st_size} bytes")
        body = read_exactly(handle, size, f"the IDX header (shape {shape})")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def _find(folder: Path, name: str) -> Path:
    plain = folder / name
    gzipped = folder / f"{name}.gz"
    return gzipped if not plain.is_file() and gzipped.is_file() else require_file(plain, "MNIST", MNIST_URL)


def load_mnist(
    n_examples: int | None = None, data_dir: str | os.PathLike | None = None, split: str = "test"
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST (60,000 train or 10,000 test images).

    Returns
    -------
    x : numpy.ndarray
        ``(n, 1, 28, 28)`` float32 in [0, 1].
    y : numpy.ndarray
        ``(n,)`` int64 in 0..9.
    """
    check_choice(split, tuple(_PREFIX), "split")
    folder = data_root(data_dir) / "MNIST" / "raw"
    images_path = _find(folder, f"{_PREFIX[split]}-images-idx3-ubyte")
    labels_path = _find(folder, f"{_PREFIX[split]}-labels-idx1-ubyte")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"MNIST {split}: expected (n, 28, 28) images and n labels, got {images.shape}, {labels.shape}")
    labels = class_labels(labels, 10, f"MNIST {str(labels_path)!r}")
    x, y = take(n_examples, images, labels)
    return x[:, None].astype(np.float32) / 255.0, y
