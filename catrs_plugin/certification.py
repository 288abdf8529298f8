"""Certify or predict a whole data split into a Cohen-format file, resumably.

Examples are handled in groups that share forward batches; each finished group's rows are
appended and flushed at once, and a rerun skips every index the file already holds. Because
noise is seeded per example (see :mod:`catrs_plugin.smoothing`), a resumed run writes the
same rows as an uninterrupted one, apart from the ``time`` column.
"""

from __future__ import annotations

import os
import time
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from catrs_plugin.results import (
    CERTIFY_HEADER,
    PREDICT_HEADER,
    ResultWriter,
    format_certify_row,
    format_predict_row,
)
from catrs_plugin.smoothing import Smooth
from catrs_plugin.validation import check_alpha, check_positive_int


def select_indices(count: int, skip: int = 1, max_index: int = -1) -> np.ndarray:
    """Indices ``i < count`` with ``i % skip == 0``, stopping at ``max_index`` (excluded) if >= 0.

    The same selection as the reference ``certify.py`` (``--skip``, ``--max``).
    """
    skip = check_positive_int(skip, "skip")
    indices = np.arange(0, count, skip)
    if max_index >= 0:
        indices = indices[indices < max_index]
    return indices


def certify_to_file(
    model: nn.Module,
    num_classes: int,
    sigma: float,
    x: np.ndarray,
    y: np.ndarray,
    outfile: str | os.PathLike,
    indices: Sequence[int] | np.ndarray | None = None,
    *,
    n0: int = 100,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int | str | None = None,
    seed: int = 0,
    fast: bool = False,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    compile_mode: str | None = None,
    resume: bool = True,
    progress: bool = True,
) -> int:
    """Run CERTIFY on ``x[indices]`` and append one row per example to ``outfile``.

    Parameters
    ----------
    model : torch.nn.Module
        Base classifier (inputs in [0, 1], logits out).
    num_classes : int
        Number of classes.
    sigma : float
        Noise level.
    x, y : numpy.ndarray
        The whole split; ``indices`` selects from it and names the rows. ``x`` may be any
        array-like with ``shape`` and integer-array indexing (e.g. images decoded on access).
    outfile : str or os.PathLike
        Cohen-format TSV; its complete rows are kept and skipped when ``resume`` is true.
    indices : array of int, optional
        Data-set indices to certify (default: all).
    n0, n, alpha
        As in :meth:`Smooth.certify`.
    batch_size, seed, fast, autocast_dtype, channels_last, compile_mode
        As in :class:`Smooth`: ``batch_size="auto"`` sizes batches from free GPU memory;
        ``fast=True`` is the fast path (bfloat16, folded batch norm, ``torch.compile``, CUDA
        graphs), compiled once per model and input shape for all calls of a process.
    resume : bool
        Continue an existing file instead of overwriting it.
    progress : bool
        Show a progress bar over examples.

    Returns
    -------
    int
        Number of rows written by this call.
    """
    n0, n = check_positive_int(n0, "N0"), check_positive_int(n, "N")
    alpha = check_alpha(alpha)
    smooth = Smooth(model, num_classes, sigma, batch_size=batch_size, seed=seed, fast=fast,
                    autocast_dtype=autocast_dtype, channels_last=channels_last, compile_mode=compile_mode)
    return _run(
        smooth, x, y, outfile, indices, CERTIFY_HEADER, n0 + n, resume, progress,
        lambda batch, keys: smooth.certify(batch, n0, n, alpha, indices=keys),
        lambda i, label, result, seconds: format_certify_row(i, label, int(result[0]), float(result[1]), seconds),
    )


def predict_to_file(
    model: nn.Module,
    num_classes: int,
    sigma: float,
    x: np.ndarray,
    y: np.ndarray,
    outfile: str | os.PathLike,
    indices: Sequence[int] | np.ndarray | None = None,
    *,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int | str | None = None,
    seed: int = 0,
    fast: bool = False,
    autocast_dtype: torch.dtype | None = None,
    channels_last: bool = False,
    compile_mode: str | None = None,
    resume: bool = True,
    progress: bool = True,
) -> int:
    """Run PREDICT on ``x[indices]`` and append ``idx label predict correct time`` rows to ``outfile``.

    The arguments are those of :func:`certify_to_file` (``n`` is PREDICT's sample count).
    """
    n = check_positive_int(n, "N")
    alpha = check_alpha(alpha)
    smooth = Smooth(model, num_classes, sigma, batch_size=batch_size, seed=seed, fast=fast,
                    autocast_dtype=autocast_dtype, channels_last=channels_last, compile_mode=compile_mode)
    return _run(
        smooth, x, y, outfile, indices, PREDICT_HEADER, n, resume, progress,
        lambda batch, keys: (smooth.predict(batch, n, alpha, indices=keys),),
        lambda i, label, result, seconds: format_predict_row(i, label, int(result[0]), seconds),
    )


def _run(smooth, x, y, outfile, indices, header, per_example, resume, progress, compute, format_row) -> int:
    x = x if hasattr(x, "shape") and hasattr(x, "__getitem__") else np.asarray(x)  # array-likes decode lazily
    y = np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    selected = np.arange(len(x)) if indices is None else np.asarray(indices, dtype=np.int64)
    if len(selected) and (selected.min() < 0 or selected.max() >= len(x)):
        raise ValueError(f"indices must lie in [0, {len(x)}), got [{selected.min()}, {selected.max()}]")
    group = max(1, -(-smooth.resolve_batch_size(tuple(x.shape[1:])) // per_example))
    written = 0
    with ResultWriter(outfile, header, resume=resume) as writer:
        todo = np.array([i for i in selected if int(i) not in writer.done], dtype=np.int64)
        with tqdm(total=len(todo), unit="example", desc="certify" if header == CERTIFY_HEADER else "predict",
                  disable=not progress) as bar:
            for start in range(0, len(todo), group):
                keys = todo[start : start + group]
                began = time.perf_counter()
                results = compute(x[keys], keys)
                seconds = (time.perf_counter() - began) / len(keys)
                for position, i in enumerate(keys):
                    row = tuple(column[position] for column in results)
                    writer.write(format_row(int(i), int(y[i]), row, seconds))
                written += len(keys)
                bar.update(len(keys))
    return written
