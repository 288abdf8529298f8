"""Summaries of corruption benchmarks (CIFAR-10-C): one CERTIFY file per corruption in a folder.

As in the CAT-RS paper: per corruption, the ACR and the accuracy of the smoothed classifier
(certified accuracy at radius 0) over the certified examples; then their means over the
corruptions, mACR and mAcc.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from catrs_plugin.results.metrics import average_certified_radius, certified_accuracy
from catrs_plugin.results.report import render_table
from catrs_plugin.results.tsv import read_certify_results

#: Severities of a corruption benchmark; a corruption file holds one equal block of rows per
#: severity, in this order (CIFAR-10-C's layout).
SEVERITIES = (1, 2, 3, 4, 5)


def summarize_corruptions(directory: str | os.PathLike) -> dict:
    """Summary of the ``<corruption>.tsv`` CERTIFY files in ``directory``.

    Returns
    -------
    dict
        ``path``; ``corruptions``: one row per file, sorted by name, with ``corruption``,
        ``path``, ``n``, ``acr`` and ``accuracy`` (a fraction); ``mean_acr`` and
        ``mean_accuracy``: the unweighted means of the rows.

    Raises
    ------
    FileNotFoundError
        If ``directory`` does not exist.
    ValueError
        If it holds no ``.tsv`` file or a file is malformed.
    """
    directory = Path(directory)
    if directory.is_file():
        raise ValueError(f"{str(directory)!r} is a file; --corruptions takes folders of <corruption>.tsv files")
    if not directory.is_dir():
        raise FileNotFoundError(f"corruption result folder {str(directory)!r} does not exist")
    files = sorted(directory.glob("*.tsv"))
    if not files:
        raise ValueError(f"{str(directory)!r} holds no <corruption>.tsv CERTIFY files")
    rows = []
    for file in files:
        results = read_certify_results(file)
        if not len(results):
            raise ValueError(f"{file} holds no result rows (only the header)")
        rows.append({
            "corruption": file.stem,
            "path": str(file),
            "n": len(results),
            "acr": average_certified_radius(results.radius, results.correct),
            "accuracy": float(certified_accuracy(results.radius, results.correct, [0.0])[0]),
        })
    return {
        "path": str(directory),
        "corruptions": rows,
        "mean_acr": float(np.mean([row["acr"] for row in rows])),
        "mean_accuracy": float(np.mean([row["accuracy"] for row in rows])),
    }


def format_corruption_table(summaries: list[dict], markdown: bool = False, latex: bool = False) -> str:
    """One row per corruption and a last row of means; two columns (ACR, Acc in percent) per folder,
    as plain text, Markdown or LaTeX (:func:`~catrs_plugin.results.report.render_table`).

    Folders are labelled by their names; a corruption missing from a folder shows ``-``.
    """
    labels = [Path(summary["path"]).name or summary["path"] for summary in summaries]
    header = ["corruption", *(f"{label} {column}" for label in labels for column in ("ACR", "Acc"))]
    names = sorted({row["corruption"] for summary in summaries for row in summary["corruptions"]})
    table = []
    for name in names:
        cells = [name]
        for summary in summaries:
            row = next((r for r in summary["corruptions"] if r["corruption"] == name), None)
            cells += ["-", "-"] if row is None else [f"{row['acr']:.3f}", f"{100 * row['accuracy']:.1f}"]
        table.append(cells)
    table.append(["mean (mACR, mAcc)", *(cell for summary in summaries
                                         for cell in (f"{summary['mean_acr']:.3f}",
                                                      f"{100 * summary['mean_accuracy']:.1f}"))])
    return render_table(header, table, markdown, left_first=True, latex=latex)
