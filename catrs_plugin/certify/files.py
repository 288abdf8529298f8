"""Certify or predict a whole data split into a Cohen-format file, resumably.

Examples are handled in groups that share forward batches; each finished group's rows are
appended and flushed at once, and a rerun skips every index the file already holds. Because
noise is seeded per example (see :mod:`catrs_plugin.certify.smoothing`), a resumed run writes the
same rows as an uninterrupted one, apart from the ``time`` column. A file is only continued
by the run that produced it: the model's weights, the data, the selected indices and every
setting are recorded next to it (:mod:`catrs_plugin.utils.provenance`) and must match.

``certify_to_file(..., sequential=True)`` runs sequential CERTIFY
(:mod:`catrs_plugin.certify.sequential`) with the label-aware exit, and writes the ``samples``
column too; its record names the procedure, the radii and the split of ``alpha``, so that a
file is never continued with the other procedure or other radii.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from catrs_plugin.certify.sequential import DEFAULT_RADII, StoppingRule
from catrs_plugin.certify.smoothing import Smooth
from catrs_plugin.certify.streams import NOISE_BLOCK
from catrs_plugin.results.tsv import (
    CERTIFY_HEADER,
    PREDICT_HEADER,
    SEQUENTIAL_HEADER,
    ResultWriter,
    format_certify_row,
    format_predict_row,
)
from catrs_plugin.utils import provenance
from catrs_plugin.utils.validation import check_alpha, check_positive_int

#: Examples per call of sequential CERTIFY, in forward batches' worth of blocks: inputs stop at
#: different times and the batch is refilled from the call's queue, so a call holds several
#: batches of inputs (its rows are written when it ends).
SEQUENTIAL_GROUP = 4


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
    progress: bool | str = True,
    settings: Mapping[str, Any] | None = None,
    sequential: bool = False,
    radii: Sequence[float] = DEFAULT_RADII,
    alpha_sequence: float | None = None,
) -> int:
    """Run CERTIFY (or sequential CERTIFY) on ``x[indices]`` and append one row per example to ``outfile``.

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
        Continue an existing file instead of overwriting it; the file must have been produced
        by the same model, data, indices and settings.
    progress : bool or str
        Show a progress bar over the examples still to do (none when every row is done), labelled
        ``certify`` or with this text.
    settings : mapping, optional
        More settings to record with the file (e.g. the data set's name and split); they
        replace computed ones of the same name (a shard of a distributed run records the
        selection of the whole run as ``indices``).
    sequential : bool
        Sequential CERTIFY (:meth:`Smooth.certify_sequential`) with the labels ``y``: each
        input stops once every radius of ``radii`` is decided, an input whose selected class is
        not its label after the selection; rows get the ``samples`` column
        (:data:`~catrs_plugin.results.tsv.SEQUENTIAL_HEADER`). Certified accuracy at ``radii``
        is comparable with exact CERTIFY's, ACR is not (see :mod:`catrs_plugin.certify.sequential`).
    radii, alpha_sequence
        The radii to decide and the confidence sequence's share of ``alpha``, as in
        :meth:`Smooth.certify_sequential` (with ``sequential`` only).

    Returns
    -------
    int
        Number of rows written by this call.

    Raises
    ------
    catrs_plugin.utils.provenance.ProvenanceError
        If ``resume`` is set and ``outfile`` holds rows of another run (or of an unknown one).
    """
    n0, n = check_positive_int(n0, "N0"), check_positive_int(n, "N")
    alpha = check_alpha(alpha)
    rule = StoppingRule(sigma, n, alpha, radii, alpha_sequence) if sequential else None
    smooth = Smooth(model, num_classes, sigma, batch_size=batch_size, seed=seed, fast=fast,
                    autocast_dtype=autocast_dtype, channels_last=channels_last, compile_mode=compile_mode)
    x, y, selected = _selection(x, y, indices)
    record = {"command": "certify", "N0": n0, **_settings(smooth, x, y, selected, n, alpha, settings)}
    batch = smooth.resolve_batch_size(tuple(x.shape[1:]))
    if rule is None:
        return _run(
            smooth, x, y, outfile, selected, CERTIFY_HEADER, _group(batch, n0 + n), resume, progress, record,
            lambda inputs, keys: smooth.certify(inputs, n0, n, alpha, indices=keys),
            lambda i, label, result, seconds: format_certify_row(i, label, int(result[0]), float(result[1]), seconds),
        )
    record.update(rule.describe(), label_aware_exit=True)
    return _run(
        smooth, x, y, outfile, selected, SEQUENTIAL_HEADER, SEQUENTIAL_GROUP * max(1, batch // NOISE_BLOCK), resume,
        progress, record,
        lambda inputs, keys: smooth.certify_sequential(inputs, n0, n, alpha, rule.radii, rule.alpha_sequence,
                                                       labels=y[keys], indices=keys),
        lambda i, label, result, seconds: format_certify_row(i, label, int(result[0]), float(result[1]), seconds,
                                                             samples=int(result[2])),
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
    progress: bool | str = True,
    settings: Mapping[str, Any] | None = None,
) -> int:
    """Run PREDICT on ``x[indices]`` and append ``idx label predict correct time`` rows to ``outfile``.

    The arguments, resuming and the record of settings are those of :func:`certify_to_file` (``n`` is
    PREDICT's sample count).
    """
    n = check_positive_int(n, "N")
    alpha = check_alpha(alpha)
    smooth = Smooth(model, num_classes, sigma, batch_size=batch_size, seed=seed, fast=fast,
                    autocast_dtype=autocast_dtype, channels_last=channels_last, compile_mode=compile_mode)
    x, y, selected = _selection(x, y, indices)
    record = {"command": "predict", **_settings(smooth, x, y, selected, n, alpha, settings)}
    return _run(
        smooth, x, y, outfile, selected, PREDICT_HEADER, _group(smooth.resolve_batch_size(tuple(x.shape[1:])), n),
        resume, progress, record,
        lambda batch, keys: (smooth.predict(batch, n, alpha, indices=keys),),
        lambda i, label, result, seconds: format_predict_row(i, label, int(result[0]), seconds),
    )


def _settings(smooth: Smooth, x, y, selected: np.ndarray, n: int, alpha: float,
              given: Mapping[str, Any] | None) -> dict[str, Any]:
    """What decides the rows of a result file (the record :class:`ResultWriter` checks), apart from ``N0``;
    the caller's ``given`` settings replace computed ones of the same name (those are then not computed).

    ``precision`` names the inference recipe wherever it may round differently from the plain fp32
    computation (autocast, ``channels_last``, folded batch norm, ``torch.compile``, the fast
    path); the batch size changes no number.
    """
    given = dict(given or {})
    recipe = smooth.recipe
    precision = [provenance.precision_name(recipe.autocast_dtype)] + [
        f"{field.name}={getattr(recipe, field.name)}" for field in dataclasses.fields(recipe)
        if field.name != "autocast_dtype" and getattr(recipe, field.name) != field.default
    ]
    digests = {"model": lambda: provenance.weights_digest(smooth.base_classifier),
               "data": lambda: provenance.data_identity(x, y), "indices": lambda: provenance.indices_record(selected)}
    return {**{key: digest() for key, digest in digests.items() if key not in given}, "sigma": smooth.sigma, "N": n,
            "alpha": alpha, "seed": smooth.seed, "precision": ", ".join(precision), **given}


def _selection(x, y, indices):
    x = x if hasattr(x, "shape") and hasattr(x, "__getitem__") else np.asarray(x)  # array-likes decode lazily
    y = np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    selected = np.arange(len(x)) if indices is None else np.asarray(indices, dtype=np.int64)
    if len(selected) and (selected.min() < 0 or selected.max() >= len(x)):
        raise ValueError(f"indices must lie in [0, {len(x)}), got [{selected.min()}, {selected.max()}]")
    return x, y, selected


def _group(batch: int, per_example: int) -> int:
    """Examples per call of an exact procedure: enough to fill one forward batch."""
    return max(1, -(-batch // per_example))


def _run(smooth, x, y, outfile, selected, header, group, resume, progress, record, compute, format_row) -> int:
    written = 0
    with ResultWriter(outfile, record, header, resume=resume, selection=selected) as writer:
        todo = np.array([i for i in selected if int(i) not in writer.done], dtype=np.int64)
        label = progress if isinstance(progress, str) else "predict" if header == PREDICT_HEADER else "certify"
        with tqdm(total=len(todo), unit="example", desc=label, disable=not progress or not len(todo)) as bar:
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
