"""Plots of certified accuracy against radius, one curve per result file (as in the papers' figures).

matplotlib is imported when a plot is drawn, with the non-interactive ``Agg`` backend, so the
rest of the package does not depend on it being importable.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from catrs_plugin.results.metrics import average_certified_radius, certified_accuracy
from catrs_plugin.results.tsv import CertifyResults

#: Points per curve: the curve is a step function evaluated on this many radii.
CURVE_POINTS = 400


def certified_accuracy_curve(results: CertifyResults, max_radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Radii from 0 to ``max_radius`` and the certified accuracy (a fraction) at each of them."""
    radii = np.linspace(0.0, max_radius, CURVE_POINTS)
    return radii, certified_accuracy(results.radius, results.correct, radii)


def plot_certified_accuracy(
    curves: Mapping[str, CertifyResults],
    path: str | os.PathLike,
    max_radius: float | None = None,
    title: str | None = None,
) -> Path:
    """Draw certified accuracy against radius for each labelled result and save it to ``path``.

    Parameters
    ----------
    curves : mapping of str to CertifyResults
        Legend label (the ACR is appended to it) to the results of one certification run.
    path : str or os.PathLike
        Image file to write; the format follows the suffix (``.png``, ``.pdf``, ``.svg``).
    max_radius : float, optional
        Right end of the radius axis; defaults to the largest certified radius plus 10 %.
    title : str, optional
        Figure title.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    if not curves:
        raise ValueError("curves is empty; pass at least one label -> CertifyResults entry")
    if max_radius is None:
        largest = max(float(np.max(r.radius, initial=0.0)) for r in curves.values())
        max_radius = max(largest * 1.1, 0.25)
    if not max_radius > 0:
        raise ValueError(f"max_radius must be > 0, got {max_radius}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for label, results in curves.items():
        radii, accuracy = certified_accuracy_curve(results, max_radius)
        acr = average_certified_radius(results.radius, results.correct)
        axes.plot(radii, accuracy, label=f"{label} (ACR {acr:.3f})", drawstyle="steps-post")
    axes.set_xlabel("L2 radius")
    axes.set_ylabel("certified accuracy")
    axes.set_xlim(0, max_radius)
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.legend()
    if title:
        axes.set_title(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
