"""Atomic file writes: a temporary file in the target's folder, flushed to disk, then renamed.

A run killed during a write leaves the previous file (or none) in place, never a truncated
one. Checkpoints, soft labels, adversarial examples, merged result files, summaries and
provenance records are all written this way.

A killed run does leave its temporary file (``.<name>.<hex>.tmp``) behind; the next write of
the same file removes it. A writer holds a lock on its temporary file while it writes
(:func:`catrs_plugin.utils.locking.try_lock`), so only a temporary whose writer is gone (the
lock is free) and which has not changed for :data:`STALE_SECONDS` is removed.

File modes follow one rule for everything the package writes: the mode ``open(path, "w")``
would give. A new file gets ``0o666`` minus the process umask (``0o644`` under the usual umask
``022``), the same as the result files appended row by row; a file that is replaced keeps its
mode. (``tempfile.mkstemp`` alone would make every atomically written file ``0o600``.)
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import stat
import time
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from catrs_plugin.utils.locking import try_lock

#: Mode of a new file before the umask is applied, as for :func:`open`.
NEW_FILE_MODE = 0o666

#: A temporary file unchanged for this long and not locked by a writer is a killed write's leftover.
STALE_SECONDS = 60.0

_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[0-9a-f]{12}\.tmp")


def _create_temporary(path: Path) -> tuple[int, Path]:
    """Open a new, uniquely named file next to ``path`` the way :func:`open` creates files, and lock it."""
    while True:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            handle = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                             NEW_FILE_MODE)
        except FileExistsError:
            continue
        try_lock(handle)  # a new file: nobody else holds it
        return handle, temporary


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that killed writes of ``path`` left behind; returns those removed.

    A temporary is removed only when no writer holds its lock and it has not changed for
    :data:`STALE_SECONDS` (a write in progress keeps its lock).
    """
    path = Path(path)
    removed = []
    with contextlib.suppress(OSError):
        candidates = [entry for entry in os.scandir(path.parent) if (match := _TEMPORARY.fullmatch(entry.name))
                      and match.group("name") == path.name]
        for entry in candidates:
            with contextlib.suppress(OSError):
                if time.time() - entry.stat().st_mtime < STALE_SECONDS:
                    continue
                handle = os.open(entry.path, os.O_RDWR | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
                try:
                    if try_lock(handle):
                        os.unlink(entry.path)
                        removed.append(Path(entry.path))
                finally:
                    os.close(handle)
    return removed


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary stream whose content replaces ``path`` when the block ends without an error.

    On an error (or ``KeyboardInterrupt``) the temporary file is removed and ``path`` is unchanged.
    The file gets the mode :func:`open` would give it (see the module docstring).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    handle, temporary = _create_temporary(path)
    try:
        with os.fdopen(handle, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        with contextlib.suppress(FileNotFoundError):
            os.chmod(temporary, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
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
