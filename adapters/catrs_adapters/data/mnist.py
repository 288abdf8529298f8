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
from catrs_plugin.utils.reading import parsing
from catrs_plugin.utils.validation import check_choice

MNIST_URL = "https://yann.lecun.com/exdb/mnist/ (mirror: https://ossci-datasets.s3.amazonaws.com/mnist/)"

_PREFIX = {"train": "train", "test": "t10k"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An unsigned-byte IDX file (optionally gzipped) as a uint8 array of its declared shape.

    Raises
    ------
    ValueError
        If the file is not an unsigned-byte IDX file (a damaged gzip, another header, a body
        that does not match the declared shape).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with parsing(path, "MNIST file", "an IDX file"):
        with opener(path, "rb") as handle:
            raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{str(path)!r} is not an unsigned-byte IDX file (header {raw[:4].hex()})")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(
            f"{str(path)!r}: IDX header declares {ndim} dimensions but the file ends after {len(raw)} bytes")
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != math.prod(shape):
        raise ValueError(f"{str(path)!r}: header declares shape {shape} but holds {body.size} values")
    return body.reshape(shape)


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
    images = read_idx(_find(folder, f"{_PREFIX[split]}-images-idx3-ubyte"))
    labels = read_idx(_find(folder, f"{_PREFIX[split]}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(f"MNIST {split}: expected (n, 28, 28) images and n labels, got {images.shape}, {labels.shape}")
    x, y = take(n_examples, images, labels)
    return x[:, None].astype(np.float32) / 255.0, y.astype(np.int64)
