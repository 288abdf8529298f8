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
from typing import Iterator

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
