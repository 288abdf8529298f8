"""Paper-style tables of certification summaries (plain text or Markdown)."""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

from catrs_plugin.results.metrics import format_radius


def format_table(
    summaries: Sequence[dict],
    radii: Sequence[float],
    markdown: bool = False,
    label_key: str = "path",
) -> str:
    """One row per summary: label, n, ACR and certified accuracy (percent) at each radius.

    Parameters
    ----------
    summaries : sequence of dict
        Outputs of :func:`catrs_plugin.results.metrics.summarize` (extra keys are ignored).
    radii : sequence of float
        Radii whose certified accuracy becomes a column.
    markdown : bool
        A Markdown pipe table instead of aligned plain text.
    label_key : str
        Summary entry naming the row (``path``, or ``method`` in comparisons).
    """
    header = [label_key, "n", "ACR", *(f"{r:.2f}" for r in radii)]
    rows = [
        [
            str(summary[label_key]),
            str(summary["n"]),
            f"{summary['acr']:.3f}",
            *(f"{100 * summary['certified_accuracy'][format_radius(r)]:.1f}" for r in radii),
        ]
        for summary in summaries
    ]
    return render_table(header, rows, markdown)


def render_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False, left_first: bool = False
) -> str:
    """A Markdown pipe table, or plain text with columns padded to equal width.

    Plain-text cells are right-aligned; with ``left_first`` the first column is left-aligned.
    """
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) if left_first and i == 0 else cell.rjust(width)
                  for i, (cell, width) in enumerate(zip(row, widths)))
        for row in [header, *rows]
    )


def to_json(value: Any) -> str:
    """``value`` as indented JSON, with every NaN or infinite number written as ``null``.

    ``json.dumps`` writes them as ``NaN`` and ``Infinity``, which are not JSON: other tools
    refuse the whole file. A summary holds them where a number does not exist (e.g. the seconds
    per epoch of a run that trained no epoch now).
    """

    def finite(item: Any) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {key: finite(entry) for key, entry in item.items()}
        if isinstance(item, (list, tuple)):
            return [finite(entry) for entry in item]
        return item

    return json.dumps(finite(value), indent=2, allow_nan=False)
