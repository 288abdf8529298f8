"""Atomic file writes: a temporary file in the target's folder, flushed to disk, then renamed.

A run killed during a write leaves the previous file (or none) in place, never a truncated
one. Checkpoints, soft labels, adversarial examples, merged result files and summaries are
all written this way.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary stream whose content replaces ``path`` when the block ends without an error.

    On an error (or ``KeyboardInterrupt``) the temporary file is removed and ``path`` is unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, content: str | bytes) -> None:
    """Replace ``path`` with ``content`` (text is encoded as UTF-8) atomically."""
    with atomic_writer(path) as stream:
        stream.write(content.encode() if isinstance(content, str) else content)


def save_npy_atomic(path: str | os.PathLike, array: np.ndarray) -> None:
    """:func:`numpy.save` ``array`` to ``path`` atomically."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    write_atomic(path, buffer.getvalue())
