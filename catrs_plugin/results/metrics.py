"""Summary statistics of certification results, defined as in the CAT-RS paper's tables.

* certified accuracy at radius ``r``: fraction of examples with ``correct == 1`` and
  ``radius >= r``;
* average certified radius (ACR): sum of ``radius`` over correct examples, divided by the
  number of all examples (abstentions and errors count as radius 0).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from catrs_plugin.results.tsv import CertifyResults


def average_certified_radius(radius: np.ndarray, correct: np.ndarray) -> float:
    """ACR: ``sum(radius * correct) / len(radius)``."""
    radius = np.asarray(radius, dtype=np.float64)
    if radius.size == 0:
        raise ValueError("radius is empty; ACR needs at least one example")
    return float(np.sum(radius * (np.asarray(correct) == 1)) / radius.size)


def certified_accuracy(radius: np.ndarray, correct: np.ndarray, radii: Sequence[float]) -> np.ndarray:
    """Fraction of examples certified correctly at each radius in ``radii``."""
    radius = np.asarray(radius, dtype=np.float64)
    if radius.size == 0:
        raise ValueError("radius is empty; certified accuracy needs at least one example")
    ok = np.asarray(correct) == 1
    return np.array([np.mean(ok & (radius >= r)) for r in radii])


def default_radii(max_radius: float, step: float = 0.25) -> list[float]:
    """Radii ``0, step, 2 step, ...`` up to and including ``max_radius``."""
    count = int(np.floor(max_radius / step + 1e-9)) + 1
    return [round(i * step, 10) for i in range(count)]


def summarize(results: CertifyResults, radii: Sequence[float]) -> dict:
    """Summary of one result file: ``path``, ``n``, ``acr``, ``certified_accuracy``, ``abstain``
    and mean certification ``seconds_per_example``.

    ``certified_accuracy`` maps each radius, formatted as a string (``"0.25"``), to a fraction.
    """
    accuracy = certified_accuracy(results.radius, results.correct, radii)
    return {
        "path": results.path,
        "n": len(results),
        "acr": average_certified_radius(results.radius, results.correct),
        "certified_accuracy": {format_radius(r): float(a) for r, a in zip(radii, accuracy)},
        "abstain": float(np.mean(results.predict == -1)),
        "seconds_per_example": float(np.mean(results.time)),
    }


def format_radius(radius: float) -> str:
    """Canonical string form of a radius used as a key: ``0.0``, ``0.25``, ``1.5``."""
    return repr(float(radius))
