"""Paper-style tables of certification summaries: plain text, Markdown, or LaTeX (booktabs) for a paper."""

from __future__ import annotations

import json
import math
import re
from typing import Any, Callable, Sequence

from catrs_plugin.results.metrics import P_LOWER_POINTS, format_radius
from catrs_plugin.results.published import PUBLISHED

#: A table column: its header and how a summary becomes its cell.
Column = tuple[str, Callable[[dict[str, Any]], str]]


def share(value: float | None, percent: bool) -> str:
    """A fraction as a table cell: percent with one decimal, or the fraction itself; ``-`` when unknown."""
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if percent else f"{value:.6g}"


def source_columns(summaries: Sequence[dict[str, Any]]) -> list[Column]:
    """A ``source`` column (``measured`` or ``published``) when some summary is published."""
    if not any(s.get("source") == PUBLISHED for s in summaries):
        return []
    return [("source", lambda s: s.get("source") or "measured")]


def settings_columns(summaries: Sequence[dict[str, Any]]) -> list[Column]:
    """``N`` and ``alpha``, the CERTIFY settings ACR depends on, when some summary knows them."""
    if not any(s.get("N") is not None for s in summaries):
        return []
    return [(key, lambda s, key=key: "-" if s.get(key) is None else f"{s[key]:g}") for key in ("N", "alpha")]


def distribution_columns(summaries: Sequence[dict[str, Any]], percent: bool = True) -> list[Column]:
    """The empirical CDF of ``pA_lower`` at :data:`~catrs_plugin.results.metrics.P_LOWER_POINTS` and the
    fraction at the estimation cap, when some summary knows them (see :func:`~catrs_plugin.results.metrics.summarize`)."""
    columns: list[Column] = []
    if any(s.get("p_lower_cdf") for s in summaries):
        columns += [(f"pA<={point:g}",
                     lambda s, key=repr(float(point)): share((s.get("p_lower_cdf") or {}).get(key), percent))
                    for point in P_LOWER_POINTS]
    if any(s.get("at_cap") is not None for s in summaries):
        columns.append(("at cap", lambda s: share(s.get("at_cap"), percent)))
    return columns


def samples_columns(summaries: Sequence[dict[str, Any]]) -> list[Column]:
    """``samples``, the mean estimation samples per example, when some summary knows them (a sequential
    file's ``samples`` column, or an exact file's ``N``: see :func:`~catrs_plugin.results.metrics.summarize`)."""
    if not any(s.get("samples_per_example") is not None for s in summaries):
        return []
    return [("samples", lambda s: "-" if s.get("samples_per_example") is None else f"{s['samples_per_example']:.0f}")]


def format_table(
    summaries: Sequence[dict],
    radii: Sequence[float],
    markdown: bool = False,
    label_key: str = "path",
    latex: bool = False,
) -> str:
    """One row per summary: label, n, ACR and certified accuracy (percent) at each radius, and where the
    summaries know them, the source (measured or published), ``N`` and ``alpha`` before ACR and the
    ``pA_lower`` CDF, fraction at the estimation cap (percent) and mean estimation samples after the radii.

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
    latex : bool
        A LaTeX ``tabular`` with booktabs rules instead (see :func:`render_table`).
    """
    source, settings, distribution = source_columns(summaries), settings_columns(summaries), \
        distribution_columns(summaries) + samples_columns(summaries)
    header = [label_key, *(name for name, _ in source), "n", *(name for name, _ in settings), "ACR",
              *(f"{r:.2f}" for r in radii), *(name for name, _ in distribution)]
    rows = [
        [
            str(summary[label_key]),
            *(cell(summary) for _, cell in source),
            str(summary["n"]),
            *(cell(summary) for _, cell in settings),
            f"{summary['acr']:.3f}",
            *(f"{100 * summary['certified_accuracy'][format_radius(r)]:.1f}" for r in radii),
            *(cell(summary) for _, cell in distribution),
        ]
        for summary in summaries
    ]
    return render_table(header, rows, markdown, latex=latex)


def render_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False, left_first: bool = False,
    latex: bool = False,
) -> str:
    """A Markdown pipe table, a LaTeX ``tabular`` with booktabs rules, or plain text with columns padded to
    equal width.

    Plain-text cells are right-aligned; with ``left_first`` the first column is left-aligned. In LaTeX the
    first column is left-aligned and the others right-aligned; the cells' special characters are escaped
    (``_`` becomes ``\\_``), and the table needs ``\\usepackage{booktabs}``.
    """
    if markdown and latex:
        raise ValueError("a table is either markdown or latex, not both")
    if latex:
        lines = [f"\\begin{{tabular}}{{l{'r' * (len(header) - 1)}}}", "\\toprule", _latex_row(header), "\\midrule",
                 *(_latex_row(row) for row in rows), "\\bottomrule", "\\end{tabular}"]
        return "\n".join(lines)
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


#: LaTeX's special characters and what stands for each of them in a table cell.
_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_SPECIAL = re.compile("|".join(re.escape(character) for character in _LATEX_ESCAPES))


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped, for a table cell or a caption."""
    return _LATEX_SPECIAL.sub(lambda match: _LATEX_ESCAPES[match.group()], text)


def _latex_row(cells: Sequence[str]) -> str:
    return " & ".join(latex_escape(cell) for cell in cells) + r" \\"
