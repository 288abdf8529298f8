"""Locating data files: every loader reads from ``data_dir`` and never downloads."""

from __future__ import annotations

import os
from pathlib import Path

#: Default root of the data sets, as in ``robustbench.data``.
DEFAULT_DATA_DIR = "./data"


def data_root(data_dir: str | os.PathLike | None) -> Path:
    """``data_dir``, or :data:`DEFAULT_DATA_DIR` when ``None``."""
    return Path(DEFAULT_DATA_DIR if data_dir is None else data_dir)


def require_file(path: Path, dataset: str, published: str) -> Path:
    """``path`` if it is a file; otherwise a :class:`FileNotFoundError` saying what to put where.

    Parameters
    ----------
    path : pathlib.Path
        The file the loader needs.
    dataset : str
        The data set's name, for the message.
    published : str
        Where the data set can be obtained (URL and archive name).
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"{dataset}: expected file {str(path)!r} ({path.name} in {str(path.parent)!r}) does not exist; "
            f"the data set is published at {published} (nothing is downloaded automatically; see the "
            f"'Data sets' guide of the documentation for the layout)"
        )
    return path


def require_dir(path: Path, dataset: str, published: str) -> Path:
    """``path`` if it is a directory; otherwise a :class:`FileNotFoundError` like :func:`require_file`."""
    if not path.is_dir():
        raise FileNotFoundError(
            f"{dataset}: expected directory {str(path)!r} does not exist; the data set is published at "
            f"{published} (nothing is downloaded automatically; see the 'Data sets' guide of the documentation)"
        )
    return path


def take(n_examples: int | None, *rows):
    """The first ``n_examples`` of each of ``rows`` (arrays or lists; all when ``None``), as a tuple."""
    if n_examples is None:
        return rows
    if n_examples < 1:
        raise ValueError(f"n_examples must be an integer >= 1 or None, got {n_examples}")
    return tuple(r[:n_examples] for r in rows)
