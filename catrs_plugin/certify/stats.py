"""Exact binomial statistics used by CERTIFY and PREDICT (Cohen et al., 2019).

All bounds are Clopper-Pearson intervals computed from scipy's beta quantiles; nothing here
uses a normal approximation.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import beta, binomtest, norm


def lower_confidence_bound(successes: np.ndarray | int, trials: int, alpha: float) -> np.ndarray:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion.

    Equals the lower end of ``statsmodels``' ``proportion_confint(k, n, alpha=2 * alpha,
    method="beta")``, which is what Cohen et al.'s ``core.py`` calls: the ``alpha``
    quantile of ``Beta(k, n - k + 1)``, and 0 when ``k == 0``.

    Parameters
    ----------
    successes : int or numpy.ndarray
        Number of successes ``k`` (per example).
    trials : int
        Number of trials ``n``.
    alpha : float
        One-sided failure probability.

    Returns
    -------
    numpy.ndarray
        The lower bounds, same shape as ``successes``.
    """
    k = np.asarray(successes, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bound = beta.ppf(alpha, k, trials - k + 1)
    return np.where(k > 0, bound, 0.0)


def upper_confidence_bound(successes: np.ndarray | int, trials: int, alpha: float) -> np.ndarray:
    """One-sided (1 - alpha) Clopper-Pearson upper bound: ``Beta(k + 1, n - k)`` quantile, 1 at ``k == n``."""
    k = np.asarray(successes, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bound = beta.ppf(1.0 - alpha, k + 1, trials - k)
    return np.where(k < trials, bound, 1.0)


def certified_radius(p_lower: np.ndarray | float, sigma: float) -> np.ndarray:
    """L2 radius ``sigma * PhiInverse(p_lower)`` of Cohen et al.'s Theorem 1 (0 below 1/2)."""
    p = np.asarray(p_lower, dtype=np.float64)
    return np.where(p >= 0.5, sigma * norm.ppf(np.clip(p, 0.5, 1.0)), 0.0)


def top_two_pvalue(count1: int, count2: int) -> float:
    """Two-sided exact binomial test of ``count1`` successes in ``count1 + count2`` trials at 1/2.

    PREDICT abstains when this p-value exceeds alpha (Cohen et al., 2019, Algorithm PREDICT).
    """
    total = int(count1) + int(count2)
    if total == 0:
        return 1.0
    return float(binomtest(int(count1), total, p=0.5).pvalue)
