"""Soft labels for CAT-RS: the smoothed prediction of a teacher on the training set.

:func:`smoothed_soft_labels` computes them in memory; :func:`soft_labels_to_file` writes them to
an ``.npy`` resumably (``catrs smooth-predict``, ``catrs demo`` and ``catrs compare`` cache
them this way) and :func:`read_soft_labels` reads such a file back.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from catrs_plugin.certify.smoothing import Smooth
from catrs_plugin.utils import locking, provenance
from catrs_plugin.utils.atomic import save_npy_atomic
from catrs_plugin.utils.reading import load_npy
from catrs_plugin.utils.validation import check_output_file, check_positive_int, check_soft_labels


def smoothed_soft_labels(
    teacher: nn.Module,
    x: np.ndarray,
    num_classes: int,
    sigma: float = 0.25,
    n: int = 10_000,
    batch_size: int | str = 1000,
    seed: int = 0,
    progress: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> np.ndarray:
    """Class frequencies of ``teacher(x + N(0, sigma^2 I))`` over ``n`` samples per example.

    The paper uses a Gaussian-trained teacher at ``sigma = 0.25`` with ``n = 10,000`` and the same
    soft labels for every training sigma, computed on one random crop and flip of each training
    image (:func:`catrs_plugin.train.data.training_soft_labels` draws those views). ``autocast_dtype``
    runs the teacher under autocast (default: fp32).

    Returns
    -------
    numpy.ndarray
        ``(examples, num_classes)`` float32, rows summing to 1.
    """
    smooth = Smooth(teacher, num_classes, sigma, batch_size=batch_size, seed=seed, autocast_dtype=autocast_dtype,
                    progress=progress)
    return smooth.class_frequencies(x, n)


@locking.holding(lambda arguments: check_output_file(arguments["outfile"], "soft labels file"), "soft labels")
def soft_labels_to_file(
    model: nn.Module,
    x: np.ndarray,
    num_classes: int,
    sigma: float,
    outfile: str | os.PathLike,
    *,
    n: int = 10_000,
    batch_size: int = 1000,
    seed: int = 0,
    autocast_dtype: torch.dtype | None = None,
    settings: Mapping[str, Any] | None = None,
    resume: bool = True,
    progress: bool = True,
) -> int:
    """Write :func:`smoothed_soft_labels` of every row of ``x`` to ``outfile`` (``.npy``), resumably.

    Finished rows are appended to ``OUTFILE.partial`` (raw float32, in example order); a rerun
    continues after its last complete row and the finished ``.npy`` replaces it at the end
    (atomically). Noise is seeded per example, so a resumed run writes the same numbers as an
    uninterrupted one, and the same numbers as :func:`smoothed_soft_labels`.

    Parameters
    ----------
    model : torch.nn.Module
        The teacher (inputs in [0, 1]).
    x : numpy.ndarray
        Inputs; row ``i`` uses the noise stream of example ``i``.
    num_classes, sigma, n, batch_size, seed, autocast_dtype
        As in :class:`~catrs_plugin.certify.smoothing.Smooth` and its ``class_frequencies``.
    outfile : str or os.PathLike
        The ``.npy`` to write.
    settings : mapping, optional
        More settings to record (e.g. the data set's name and split). The teacher's weights,
        the inputs, ``sigma``, ``n``, ``seed`` and the precision are always recorded; an
        existing ``outfile`` or unfinished run is only reused when they all match.
    resume : bool
        Reuse a finished ``outfile`` or continue an unfinished run (default) instead of
        starting over.

    Returns
    -------
    int
        Rows computed by this call (0 when ``outfile`` already held these soft labels).

    Raises
    ------
    catrs_plugin.utils.provenance.ProvenanceError
        If ``resume`` is set and ``outfile`` (or the unfinished run) was produced with other
        settings, or nothing records what produced it.
    catrs_plugin.utils.locking.OutputLocked
        If another process or thread is writing ``outfile`` (it is locked while this runs).
    ValueError
        If the rows of the unfinished run are not class frequencies (a damaged file).
    """
    outfile = Path(outfile)
    n = check_positive_int(n, "N")
    smooth = Smooth(model, num_classes, sigma, batch_size=batch_size, seed=seed, autocast_dtype=autocast_dtype)
    record = {"command": "soft-labels", "model": provenance.weights_digest(model), "data": provenance.digest(x),
              "classes": smooth.num_classes, "sigma": smooth.sigma, "N": n, "seed": smooth.seed,
              "precision": provenance.precision_name(autocast_dtype), **(settings or {})}
    if resume and provenance.reuse(outfile, record, what="soft labels"):
        return 0
    partial = check_output_file(outfile.with_name(outfile.name + ".partial"), "unfinished soft labels")
    row_bytes = 4 * num_classes
    done = 0
    if provenance.start(partial, record, resume, what="unfinished soft labels"):
        done = min(partial.stat().st_size // row_bytes, len(x))
        check_frequencies(np.fromfile(partial, dtype=np.float32, count=done * num_classes).reshape(done, num_classes),
                          n, f"unfinished soft labels {str(partial)!r}")
        with open(partial, "r+b") as handle:
            handle.truncate(done * row_bytes)  # cut off a row a killed run was writing
    else:
        partial.write_bytes(b"")
    group = max(1, smooth.resolve_batch_size(tuple(x.shape[1:])) // n)
    with open(partial, "ab") as handle, tqdm(total=len(x), initial=done, unit="example", desc="soft labels",
                                             disable=not progress or done == len(x)) as bar:
        for start in range(done, len(x), group):
            rows = np.arange(start, min(start + group, len(x)))
            handle.write(smooth.class_frequencies(x[rows], n, indices=rows).astype(np.float32).tobytes())
            handle.flush()
            bar.update(len(rows))
    frequencies = np.fromfile(partial, dtype=np.float32)
    if frequencies.size != len(x) * num_classes:
        raise ValueError(f"unfinished soft labels {str(partial)!r} hold {frequencies.size / num_classes:g} rows, not "
                         f"the {len(x)} computed (was the file changed while this run wrote it?)")
    frequencies = check_frequencies(frequencies.reshape(len(x), num_classes), n, f"soft labels of {str(outfile)!r}")
    provenance.save(outfile, record, lambda path: save_npy_atomic(path, frequencies))
    provenance.discard(partial)
    return len(x) - done


def check_frequencies(rows: np.ndarray, n: int, what: str) -> np.ndarray:
    """``rows`` if each is a vector of class frequencies over ``n`` samples: counts / ``n`` summing to 1.

    Raises
    ------
    ValueError
        Naming ``what`` and the first row that cannot be such frequencies (e.g. bytes two runs
        appended to one file).
    """
    counts = rows.astype(np.float64) * n
    tolerance = 1e-3 + 1e-6 * n  # float32 holds count / n to a relative 6e-8
    bad = ~np.isfinite(counts).all(axis=1) | (counts < 0).any(axis=1) \
        | (np.abs(counts - np.round(counts)) > tolerance).any(axis=1) | (np.abs(counts.sum(axis=1) - n) > tolerance)
    if bad.any():
        raise ValueError(f"{what}: row {int(np.flatnonzero(bad)[0])} is not the class frequencies of {n} samples "
                         "(counts / N summing to 1); the file is damaged: pass resume=False (--restart) to compute it "
                         "again")
    return rows


def read_soft_labels(path: str | os.PathLike, n: int, num_classes: int, name: str = "soft labels") -> np.ndarray:
    """Soft labels from an ``.npy``: float32 ``(n, num_classes)``, rows summing to 1.

    Raises
    ------
    ValueError
        If the file is not a numeric ``.npy`` (pickled objects, text, random bytes ...), or the
        array has another shape or rows that are not probabilities; the message starts with
        ``name`` and the file.
    """
    return check_soft_labels(load_npy(path, name), n, num_classes, f"{name} {str(path)!r}")
