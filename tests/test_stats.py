"""Clopper-Pearson bounds, radii and the PREDICT test, against independent computations."""

import math

import numpy as np
import pytest
from scipy.special import betainc
from scipy.stats import binom, norm

from catrs_plugin.certify.stats import certified_radius, lower_confidence_bound, top_two_pvalue, upper_confidence_bound


@pytest.mark.parametrize("k,n", [(1, 10), (50, 100), (99, 100), (99_000, 100_000), (100_000, 100_000)])
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_lower_bound_is_the_exact_clopper_pearson_bound(k, n, alpha):
    p = float(lower_confidence_bound(k, n, alpha))
    # Clopper-Pearson: P(Binomial(n, p) >= k) = alpha at the lower bound, i.e. I_p(k, n - k + 1) = alpha.
    assert betainc(k, n - k + 1, p) == pytest.approx(alpha, rel=1e-6)
    assert binom.sf(k - 1, n, p) == pytest.approx(alpha, rel=1e-5)


def test_lower_bound_matches_statsmodels_when_available():
    proportion = pytest.importorskip("statsmodels.stats.proportion")
    for k, n in [(0, 10), (3, 10), (970, 1000), (100_000, 100_000)]:
        expected = proportion.proportion_confint(k, n, alpha=2 * 0.001, method="beta")[0]
        assert float(lower_confidence_bound(k, n, 0.001)) == pytest.approx(expected, abs=1e-12)


def test_bounds_at_the_edges():
    assert float(lower_confidence_bound(0, 10, 0.01)) == 0.0
    assert float(upper_confidence_bound(10, 10, 0.01)) == 1.0
    # All successes: the lower bound is alpha ** (1 / n).
    assert float(lower_confidence_bound(100, 100, 0.001)) == pytest.approx(0.001 ** (1 / 100))
    assert float(upper_confidence_bound(0, 100, 0.001)) == pytest.approx(1 - 0.001 ** (1 / 100))


def test_bounds_bracket_the_estimate():
    k = np.arange(0, 101)
    low, high = lower_confidence_bound(k, 100, 0.01), upper_confidence_bound(k, 100, 0.01)
    assert np.all(low <= k / 100) and np.all(high >= k / 100)
    assert np.all(np.diff(low) > 0)


def test_radius_is_sigma_times_phi_inverse():
    assert float(certified_radius(0.9, 0.5)) == pytest.approx(0.5 * norm.ppf(0.9))
    assert float(certified_radius(0.5, 1.0)) == 0.0
    assert float(certified_radius(0.3, 1.0)) == 0.0


def test_top_two_pvalue_is_two_sided_binomial_test():
    assert top_two_pvalue(5, 5) == 1.0  # a tie never predicts
    expected = min(1.0, 2 * binom.cdf(2, 20, 0.5))
    assert top_two_pvalue(18, 2) == pytest.approx(expected)
    assert top_two_pvalue(0, 0) == 1.0
    assert math.isclose(top_two_pvalue(2, 18), top_two_pvalue(18, 2))


@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_clopper_pearson_coverage_by_exact_summation(alpha):
    """P(bound > p) = sum of Binomial(n, p) over the counts whose bound exceeds p: at most alpha at every p,
    and nearly alpha just below each bound value (the bound is exact, not merely conservative)."""
    for n in range(1, 41):
        k = np.arange(n + 1)
        low, high = lower_confidence_bound(k, n, alpha), upper_confidence_bound(k, n, alpha)
        grid = np.unique(np.concatenate([np.linspace(0.001, 0.999, 199), low[1:] - 1e-9, high[:-1] + 1e-9]))
        grid = grid[(grid > 0) & (grid < 1)]
        pmf = binom.pmf(k[:, None], n, grid[None, :])
        over = (pmf * (low[:, None] > grid[None, :])).sum(axis=0)
        under = (pmf * (high[:, None] < grid[None, :])).sum(axis=0)
        assert over.max() <= alpha * (1 + 1e-9) and under.max() <= alpha * (1 + 1e-9)
        assert over.max() > 0.99 * alpha and under.max() > 0.99 * alpha
