"""Summary statistics of certification results: the CAT-RS paper's, and those Sun et al. (ICML 2025)
recommend beyond ACR.

* certified accuracy at radius ``r``: fraction of examples with ``correct == 1`` and
  ``radius >= r``;
* average certified radius (ACR): sum of ``radius`` over correct examples, divided by the
  number of all examples (abstentions and errors count as radius 0); it depends on the ``N`` and
  ``alpha`` of CERTIFY, which summaries report with it;
* the distribution of ``pA_lower``: each row implies a lower bound on the probability that the
  base classifier gives the true class under noise, ``Phi(radius / sigma)`` for a correctly
  certified row (Cohen et al.'s radius is ``sigma * PhiInverse(pA_lower)``) and none (0 here) for
  an abstention or a wrong class; :func:`p_lower_cdf` is its empirical CDF;
* the fraction at the estimation cap: rows whose ``pA_lower`` is the largest CERTIFY can give
  with ``N`` samples at ``alpha``, the Clopper-Pearson lower bound of ``N`` successes out of ``N``
  (:func:`estimation_cap`). Their radius is limited by ``N``, not by the model, so ACR cannot
  tell these models apart.

sigma, ``N`` and alpha come from the provenance record next to a result file where there is one
(:func:`certification_settings`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy.stats import norm

from catrs_plugin.results.tsv import CertifyResults
from catrs_plugin.utils import provenance

#: Where :func:`summarize` reports the empirical CDF of ``pA_lower``.
P_LOWER_POINTS = (0.5, 0.75, 0.9, 0.99)


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


#: The radii of a results table when none are given: 0 to 2 in steps of 0.25 (``catrs analyze``'s
#: columns, and the radii sequential certification decides by default).
TABLE_RADII = tuple(default_radii(2.0))


def estimation_cap(n: int, alpha: float) -> float:
    """The largest ``pA_lower`` CERTIFY gives with ``n`` samples at ``alpha``: the one-sided Clopper-Pearson
    lower bound of ``n`` successes out of ``n``, ``alpha ** (1 / n)`` (the ``alpha`` quantile of
    ``Beta(n, 1)``, where :func:`catrs_plugin.certify.stats.lower_confidence_bound` has no closed form)."""
    return float(alpha ** (1.0 / n))


def cap_radius(sigma: float, n: int, alpha: float) -> float:
    """The largest radius CERTIFY certifies with ``n`` samples at ``alpha``: ``sigma * PhiInverse(estimation_cap)``."""
    return float(sigma * norm.ppf(estimation_cap(n, alpha)))


def radius_tolerance(radius: float) -> float:
    """Half a unit in the third significant digit of ``radius``: how far a radius written as Cohen et al.'s
    ``certify.py`` writes it (``{:.3}``, see :func:`catrs_plugin.results.tsv.format_certify_row`) may lie
    from the exact value (plus 1e-9 for the arithmetic)."""
    return 0.5 * 10.0 ** (math.floor(math.log10(radius)) - 2) + 1e-9 if radius > 0 else 1e-9


def at_cap(radius: np.ndarray, correct: np.ndarray, sigma: float, n: int, alpha: float) -> np.ndarray:
    """Which rows are certified correctly at the estimation cap: the radius equals :func:`cap_radius` to
    the precision the file writes it (:func:`radius_tolerance`). For ``n`` up to ``10**7`` and ``alpha``
    from ``1e-4`` to ``0.1`` the next radius CERTIFY can give, from ``n - 1`` successes, lies more than
    1 % below the cap, further than the rounding reaches at any sigma, so no other row is counted
    (a test checks it).

    Raises
    ------
    ValueError
        When a radius exceeds the cap: the rows were certified with another ``N`` or ``alpha``.
    """
    radius = np.asarray(radius, dtype=np.float64)
    cap = cap_radius(sigma, n, alpha)
    tolerance = radius_tolerance(cap)
    above = radius > cap + tolerance
    if np.any(above):
        raise ValueError(f"radius {radius[above].max():g} exceeds {cap:.4g}, the largest radius CERTIFY gives at "
                         f"sigma={sigma:g} with N={n} and alpha={alpha:g}: the rows were certified with other "
                         "settings; give the right sigma, N and alpha")
    return (np.asarray(correct) == 1) & (radius >= cap - tolerance)


def implied_p_lower(radius: np.ndarray, correct: np.ndarray, sigma: float, n: int | None = None,
                    alpha: float | None = None) -> np.ndarray:
    """The lower bound on the true class's probability under noise that each row implies.

    ``Phi(radius / sigma)`` (at least 1/2) where ``correct == 1``, and 0 (no bound) for abstentions
    and wrong classes. With ``n`` and ``alpha``, rows at the cap (:func:`at_cap`) get exactly
    :func:`estimation_cap` and no row more than it (the file's rounding of the radius can exceed it).
    """
    radius = np.asarray(radius, dtype=np.float64)
    correct = np.asarray(correct) == 1
    p = np.where(correct, norm.cdf(radius / sigma), 0.0)
    if n is not None and alpha is not None:
        cap = estimation_cap(n, alpha)
        p = np.where(at_cap(radius, correct, sigma, n, alpha), cap, np.minimum(p, cap))
    return p


def p_lower_cdf(p_lower: np.ndarray, points: Sequence[float]) -> np.ndarray:
    """Empirical CDF of ``p_lower`` at each of ``points``: the fraction of rows with ``p_lower <= p``."""
    p_lower = np.asarray(p_lower, dtype=np.float64)
    if p_lower.size == 0:
        raise ValueError("p_lower is empty; its CDF needs at least one example")
    return np.array([np.mean(p_lower <= point) for point in points])


def certification_settings(path: str | Path, sigma: float | None = None, n: int | None = None,
                           alpha: float | None = None) -> dict[str, Any]:
    """``{"sigma", "N", "alpha"}`` of a result file: from its provenance record, else the values given
    (``None`` where neither says).

    Raises
    ------
    ValueError
        When a value given differs from the record's, naming both.
    """
    record = provenance.read_record(path) or {}
    settings: dict[str, Any] = {}
    for key, given in (("sigma", sigma), ("N", n), ("alpha", alpha)):
        recorded = record.get(key)
        if recorded is not None and given is not None and float(recorded) != float(given):
            raise ValueError(f"{str(path)!r}: its provenance record says {key}={recorded:g}, not the {given:g} given")
        settings[key] = recorded if recorded is not None else given
    return settings


def summarize(results: CertifyResults, radii: Sequence[float], sigma: float | None = None, n: int | None = None,
              alpha: float | None = None) -> dict:
    """Summary of one result file: ``path``, ``n``, ``acr``, ``certified_accuracy``, ``abstain``,
    mean certification ``seconds_per_example``, the metrics beyond ACR and, for a sequential file
    (:mod:`catrs_plugin.certify.sequential`), the mean estimation ``samples_per_example`` (``None``
    for an exact CERTIFY file, whose rows all use ``N``).

    ``certified_accuracy`` maps each radius, formatted as a string (``"0.25"``), to a fraction.
    ``sigma``, ``N`` and ``alpha`` are those given (``None`` when unknown); with ``sigma``,
    ``p_lower_cdf`` maps each of :data:`P_LOWER_POINTS` (``"0.5"``) to the fraction of rows whose
    implied ``pA_lower`` (:func:`implied_p_lower`) is at most that; with all three, ``at_cap`` is the
    fraction of rows at the estimation cap (:func:`at_cap`). Both are ``None`` otherwise, and
    ``at_cap`` is ``None`` for a sequential file too: its rows stop once the requested radii are
    decided, so their radii are not limited by ``N``.
    """
    accuracy = certified_accuracy(results.radius, results.correct, radii)
    p_lower = None if sigma is None else implied_p_lower(results.radius, results.correct, sigma, n, alpha)
    capped = None if sigma is None or n is None or alpha is None or results.samples is not None else \
        float(np.mean(at_cap(results.radius, results.correct, sigma, n, alpha)))
    return {
        "path": results.path,
        "n": len(results),
        "acr": average_certified_radius(results.radius, results.correct),
        "certified_accuracy": {format_radius(r): float(a) for r, a in zip(radii, accuracy)},
        "abstain": float(np.mean(results.predict == -1)),
        "seconds_per_example": float(np.mean(results.time)),
        "sigma": sigma,
        "N": n,
        "alpha": alpha,
        "p_lower_cdf": None if p_lower is None else {
            repr(float(point)): float(value) for point, value in zip(P_LOWER_POINTS, p_lower_cdf(p_lower, P_LOWER_POINTS))},
        "at_cap": capped,
        "samples_per_example": None if results.samples is None else float(np.mean(results.samples)),
    }


def format_radius(radius: float) -> str:
    """Canonical string form of a radius used as a key: ``0.0``, ``0.25``, ``1.5``."""
    return repr(float(radius))
