"""Reading files that come from outside: whatever their content, one clear error naming the file.

Parsers of binary formats (``torch.load``, ``pickle``, ``numpy.load``, ``gzip``) raise dozens of
exception types on damaged input (``KeyError: 101`` for a text file given as a checkpoint,
``IndexError: pop from empty list`` for random bytes, an empty message for an empty file).
Every reader of the package parses inside :func:`parsing`, which turns all of them into one
:class:`ValueError` that says which file, what it should have been and what is wrong with it.
A missing file stays a :class:`FileNotFoundError`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

#: The first bytes of every ``.npy`` file.
NPY_MAGIC = b"\x93NUMPY"


class FormatError(Exception):
    """Raised inside :func:`parsing` for a problem the reader describes itself; shown as is."""


def require_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a :class:`~pathlib.Path` if it is a file.

    Raises
    ------
    FileNotFoundError
        If nothing exists at ``path``.
    ValueError
        If ``path`` is a folder or another non-file.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a folder, not a file")
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    if not path.is_file():
        raise ValueError(f"{what} {str(path)!r} is not a regular file")
    return path


def one_line(text: str, limit: int = 300) -> str:
    """``text`` with its whitespace collapsed to single spaces, cut to ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_failure(path: Path, error: BaseException) -> str:
    """Why parsing ``path`` failed, in words on one line (an empty file or message says so)."""
    with contextlib.suppress(OSError):
        if path.stat().st_size == 0:
            return "the file is empty"
    text = one_line(str(error))
    if isinstance(error, FormatError):
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@contextlib.contextmanager
def parsing(path: str | os.PathLike, what: str, expected: str) -> Iterator[None]:
    """Turn any error raised while parsing ``path`` into ``ValueError("<what> '<path>' is not <expected>: ...")``.

    Parameters
    ----------
    path : str or os.PathLike
        The file being parsed.
    what : str
        What the file is to the caller, e.g. ``"checkpoint"`` or ``"--soft-labels file"``.
    expected : str
        The format it must have, e.g. ``"a PyTorch checkpoint"``.
    """
    path = Path(path)
    try:
        yield
    except FileNotFoundError:
        raise
    except PermissionError:
        raise ValueError(f"{what} {str(path)!r} cannot be read: permission denied") from None
    except Exception as error:  # damaged input can make any parser fail in any way
        raise ValueError(
            f"{what} {str(path)!r} is not {expected} (corrupt, truncated or another kind of file): "
            f"{describe_failure(path, error)}"
        ) from None


def read_text(path: str | os.PathLike, what: str) -> str:
    """The content of a UTF-8 text file; a binary file is a :class:`ValueError` naming it."""
    path = require_file(path, what)
    with parsing(path, what, "a UTF-8 text file"):
        return path.read_bytes().decode("utf-8")


def load_npy(path: str | os.PathLike, what: str, mmap_mode: str | None = None) -> np.ndarray:
    """An array from a ``.npy`` file, never unpickling objects.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.npy`` file.
    what : str
        What the file is to the caller (for messages), e.g. ``"--soft-labels file"``.
    mmap_mode : str, optional
        As in :func:`numpy.load` (``"r"`` maps a large file instead of reading it).

    Raises
    ------
    ValueError
        If the file is not a ``.npy`` array of numbers (e.g. pickled objects, an ``.npz``
        archive, text, random bytes, a truncated file).
    """
    path = require_file(path, what)
    with parsing(path, what, "a NumPy .npy array"):
        with open(path, "rb") as handle:
            magic = handle.read(len(NPY_MAGIC))
        if magic != NPY_MAGIC:
            kind = "an .npz archive" if magic.startswith(b"PK") else "another kind of file"
            raise FormatError(f"it does not start with the .npy signature (it looks like {kind})")
        try:
            array = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
        except ValueError as error:
            if "pickle" in str(error):
                raise FormatError("it holds Python objects, which are never unpickled") from None
            raise
        if array.dtype.kind not in "biuf":
            raise FormatError(f"it holds {array.dtype} values, not numbers")
        return array


def class_labels(labels: np.ndarray | list, num_classes: int, what: str) -> np.ndarray:
    """The class labels a data file holds, as int64, checked: one integer in ``[0, num_classes)`` per example.

    Raises
    ------
    ValueError
        Naming ``what``, for labels that are not one-dimensional, not integers (NaN, fractions,
        text) or out of range (e.g. 50 or -1 in CIFAR-10).
    """
    array = np.asarray(labels)
    if array.ndim != 1:
        raise ValueError(f"{what}: labels must be one class index per example (shape (n,)), got shape {array.shape}")
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            raise ValueError(f"{what}: labels must be integer class indices, got {array[bad][0].item()} at position "
                             f"{int(np.flatnonzero(bad)[0])}")
    elif array.dtype.kind not in "iu":
        raise ValueError(f"{what}: labels must be integer class indices, got {array.dtype} values")
    outside = (array < 0) | (array >= num_classes)
    if outside.any():
        raise ValueError(f"{what}: labels must lie in 0..{num_classes - 1}, got {array[outside][0].item()} at "
                         f"position {int(np.flatnonzero(outside)[0])}")
    return array.astype(np.int64)


def image_bytes(images: np.ndarray | list, what: str) -> np.ndarray:
    """Images stored as bytes (0..255), as uint8; images of another kind are refused, never cast.

    Raises
    ------
    ValueError
        Naming ``what``, for floating-point or other non-integer values (a cast to uint8 would
        wrap or truncate them without a sign) or integers outside 0..255.
    """
    array = np.asarray(images)
    if array.dtype.kind not in "iu":
        raise ValueError(f"{what}: images must be stored as bytes (uint8, 0..255), got {array.dtype} values; "
                         "they are not converted, since a cast would change them silently")
    if array.dtype != np.uint8 and array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"{what}: image values must lie in 0..255, got values in [{array.min()}, {array.max()}]")
    return array.astype(np.uint8, copy=False)


def gzip_size(path: str | os.PathLike) -> int:
    """The uncompressed size (modulo 2**32) that a gzip file's trailer records, read without decompressing."""
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        if handle.tell() < 18:  # a 10-byte header and an 8-byte trailer at least
            raise FormatError("it is too short to be a gzip file")
        handle.seek(-4, os.SEEK_END)
        return int.from_bytes(handle.read(4), "little")


def read_exactly(handle: BinaryIO, count: int, what: str) -> bytes:
    """``count`` bytes from ``handle``, reading at most one more: a stream that holds more (or fewer)
    is a :class:`FormatError` before anything beyond ``count + 1`` bytes is read or decompressed."""
    data = handle.read(count + 1)
    if len(data) != count:
        more = "more" if len(data) > count else f"only {len(data)}"
        raise FormatError(f"{what} declares {count} bytes but the file holds {more}")
    return data
