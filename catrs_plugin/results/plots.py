"""Plots of certified accuracy against radius, one curve per result file (as in the papers' figures), and
of the empirical CDF of the ``pA_lower`` each row implies (Sun et al., ICML 2025, recommend it over ACR).

matplotlib is imported when a plot is drawn, with the non-interactive ``Agg`` backend, so the
rest of the package does not depend on it being importable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from catrs_plugin.results.metrics import average_certified_radius, certified_accuracy, p_lower_cdf
from catrs_plugin.results.tsv import CertifyResults

#: Points per curve: the curve is a step function evaluated on this many radii.
CURVE_POINTS = 400


def certified_accuracy_curve(results: CertifyResults, max_radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Radii from 0 to ``max_radius`` and the certified accuracy (a fraction) at each of them."""
    radii = np.linspace(0.0, max_radius, CURVE_POINTS)
    return radii, certified_accuracy(results.radius, results.correct, radii)


def settings_title(sigma: float | None = None, n: int | None = None, alpha: float | None = None,
                   n0: int | None = None) -> str:
    """A title line naming sigma, N0, N and alpha as matplotlib draws them (σ = 0.25, N₀ = 100, N = 100,000,
    α = 0.001, in mathtext), leaving out what is not given."""
    parts = [(r"$\sigma$", sigma, "g"), ("$N_0$", n0, ","), ("$N$", n, ","), (r"$\alpha$", alpha, "g")]
    return ", ".join(f"{name} = {value:{spec}}" for name, value, spec in parts if value is not None)


def certified_accuracy_figure(
    curves: Mapping[str, CertifyResults],
    max_radius: float | None = None,
    title: str | None = None,
    *,
    sigma: float | None = None,
    n: int | None = None,
    alpha: float | None = None,
    n0: int | None = None,
):
    """The figure of :func:`plot_certified_accuracy` (a ``matplotlib.figure.Figure``), not yet saved or closed."""
    if not curves:
        raise ValueError("curves is empty; pass at least one label -> CertifyResults entry")
    if max_radius is None:
        largest = max(float(np.max(r.radius, initial=0.0)) for r in curves.values())
        max_radius = max(largest * 1.1, 0.25)
    if not max_radius > 0:
        raise ValueError(f"max_radius must be > 0, got {max_radius}")

    figure, axes = _figure()
    for label, results in curves.items():
        radii, accuracy = certified_accuracy_curve(results, max_radius)
        acr = average_certified_radius(results.radius, results.correct)
        axes.plot(radii, 100 * accuracy, label=f"{label} (ACR {acr:.3f})", drawstyle="steps-post")
    axes.set_xlabel("L2 radius")
    axes.set_ylabel("certified accuracy (%)")
    axes.set_xlim(0, max_radius)
    axes.set_ylim(0, 100)
    _finish(figure, axes, title, settings_title(sigma, n, alpha, n0))
    return figure


def plot_certified_accuracy(
    curves: Mapping[str, CertifyResults],
    path: str | os.PathLike,
    max_radius: float | None = None,
    title: str | None = None,
    *,
    sigma: float | None = None,
    n: int | None = None,
    alpha: float | None = None,
    n0: int | None = None,
) -> Path:
    """Draw certified accuracy (in percent, as the tables give it) against radius for each labelled result and save
    it to ``path``.

    Parameters
    ----------
    curves : mapping of str to CertifyResults
        Legend label (a method's name; the ACR is appended to it) to the results of one certification run.
    path : str or os.PathLike
        Image file to write; the format follows the suffix (``.png``, ``.pdf``, ``.svg``).
    max_radius : float, optional
        Right end of the radius axis; defaults to the largest certified radius plus 10 %.
    title : str, optional
        First line of the figure's title (e.g. the data set).
    sigma, n, alpha, n0 : optional
        The noise level and CERTIFY settings the curves were certified with; those given are named
        in the title (below ``title``).

    Returns
    -------
    pathlib.Path
        The written file.
    """
    figure = certified_accuracy_figure(curves, max_radius, title, sigma=sigma, n=n, alpha=alpha, n0=n0)
    return _save(figure, path)


def plot_p_lower_cdf(
    curves: Mapping[str, np.ndarray],
    path: str | os.PathLike,
    title: str | None = None,
    *,
    sigma: float | None = None,
    n: int | None = None,
    alpha: float | None = None,
    n0: int | None = None,
) -> Path:
    """Draw the empirical CDF of ``pA_lower`` on [1/2, 1] (in percent of the inputs) for each labelled set of
    rows and save it to ``path``.

    Parameters
    ----------
    curves : mapping of str to numpy.ndarray
        Legend label to the ``pA_lower`` each row implies
        (:func:`~catrs_plugin.results.metrics.implied_p_lower`); rows without a certificate (0) are
        the curve's height at 1/2.
    path : str or os.PathLike
        Image file to write; the format follows the suffix.
    title : str, optional
        First line of the figure's title (e.g. the data set).
    sigma, n, alpha, n0 : optional
        The noise level and CERTIFY settings of the rows; those given are named in the title, as
        in :func:`plot_certified_accuracy`.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    if not curves:
        raise ValueError("curves is empty; pass at least one label -> pA_lower array entry")
    figure, axes = _figure()
    points = np.linspace(0.5, 1.0, CURVE_POINTS)
    for label, p_lower in curves.items():
        axes.plot(points, 100 * p_lower_cdf(p_lower, points), label=label, drawstyle="steps-post")
    axes.set_xlabel("pA_lower (Phi(radius / sigma) of correctly certified inputs)")
    axes.set_ylabel("inputs with pA_lower <= x (%)")
    axes.set_xlim(0.5, 1.0)
    axes.set_ylim(0, 100)
    _finish(figure, axes, title, settings_title(sigma, n, alpha, n0))
    return _save(figure, path)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(6, 4))


def _finish(figure, axes, *title_lines: str | None) -> None:
    axes.grid(alpha=0.3)
    axes.legend()
    title = "\n".join(line for line in title_lines if line)
    if title:
        axes.set_title(title, fontsize="medium")
    figure.tight_layout()


def _save(figure, path: str | os.PathLike) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
