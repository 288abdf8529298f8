"""The summary files of ``catrs compare``: merged from every run's result files once all runs finished.

Per noise level ``noise_<sigma>/summary.md`` (percentages), ``summary.tex`` (the same table as a
LaTeX booktabs ``tabular``), ``summary.csv`` (fractions), ``summary.json``, ``certified_accuracy.png``
and ``p_lower_cdf.png`` (the empirical CDF of the ``pA_lower`` each row implies); for the whole table
``summary.md``, ``summary.tex`` and ``summary.csv`` with one row per noise level and method, as in the
paper. Next to ACR and certified accuracy, every row has the
``N`` and alpha ACR was computed at, the ``pA_lower`` CDF and the fraction of inputs at the
estimation cap (:mod:`catrs_plugin.results.metrics`). With a folder of published results, the
published rows of the compared methods follow the measured ones, marked ``published``. A
collapsed run has no numbers: its row says ``collapsed`` and the reason is listed under the table;
one certified anyway (``--certify-collapsed``) has its numbers, its method marked ``(collapsed)``
and the reason listed too.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from catrs_plugin.compare.plan import Budget, Comparison
from catrs_plugin.results.metrics import default_radii, format_radius, implied_p_lower, summarize
from catrs_plugin.results.published import CATRS_RELEASE, PUBLISHED, published_results
from catrs_plugin.results.report import (
    distribution_columns,
    render_table,
    samples_columns,
    settings_columns,
    share,
    source_columns,
    to_json,
)
from catrs_plugin.results.tsv import CertifyResults, read_certify_results
from catrs_plugin.utils import provenance
from catrs_plugin.utils.atomic import write_atomic

#: Radius step of the summaries' certified-accuracy columns.
RADIUS_STEP = 0.25

#: What a collapsed run shows instead of numbers (and after its name when certified anyway).
COLLAPSED = "collapsed"


def check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Write ``settings.json`` on the first run; on later runs, refuse settings that differ."""
    path = out / "settings.json"
    if path.exists():
        provenance.check(provenance.read_json(path, "comparison settings"), settings, out, "comparison folder",
                         hint="pass another --output or the same settings")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(provenance.stamped(settings), indent=2, sort_keys=True))


def summary_table(summaries: Sequence[dict[str, Any]], radii: Sequence[float], attack_eps: Sequence[float],
                  percent: bool, with_sigma: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows: (sigma,) method, (source,) n, N, alpha, ACR, certified accuracy per radius, the
    ``pA_lower`` CDF and fraction at the cap, timings, empirical accuracy."""
    source, settings = source_columns(summaries), settings_columns(summaries)
    distribution = distribution_columns(summaries, percent) + samples_columns(summaries)
    header = [*(["sigma"] if with_sigma else []), "method", *(name for name, _ in source), "n",
              *(name for name, _ in settings), "ACR", *(f"{r:.2f}" for r in radii), *(name for name, _ in distribution),
              "train s/epoch", "certify s/example", *(f"PGD {eps:g}" for eps in attack_eps)]

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.3g}"

    rows = []
    for s in summaries:
        name = f"{s['method']} ({COLLAPSED})" if s.get("collapsed") and s.get("certified") else s["method"]
        lead = [*([f"{s['sigma']:g}"] if with_sigma else []), name, *(cell(s) for _, cell in source)]
        if not s.get("certified"):
            rows.append([*lead, "-", *("-" for _ in settings), COLLAPSED, *("-" for _ in radii),
                         *("-" for _ in distribution), seconds(s["train_seconds_per_epoch"]), "-",
                         *("-" for _ in attack_eps)])
            continue
        rows.append([
            *lead, str(s["n"]), *(cell(s) for _, cell in settings), f"{s['acr']:.3f}" if percent else f"{s['acr']:.6g}",
            *(share(s["certified_accuracy"][format_radius(r)], percent) for r in radii),
            *(cell(s) for _, cell in distribution),
            seconds(s.get("train_seconds_per_epoch")), seconds(s.get("certify_seconds_per_example")),
            *(share(s.get("empirical_accuracy", {}).get(format_radius(eps)), percent) for eps in attack_eps),
        ])
    return header, rows


def _csv(header: list[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    return buffer.getvalue()


def _latex(heading: Sequence[str], header: list[str], rows: list[list[str]], notes: Sequence[str]) -> str:
    """A booktabs ``tabular`` of the table, with the Markdown file's heading and notes as LaTeX comments."""
    comments = [f"% {line.lstrip('# ').replace('**', '')}" for line in [*heading, *notes]]
    return "\n".join([*comments, render_table(header, rows, latex=True), ""])


def _collapse_notes(summaries: Sequence[dict[str, Any]]) -> list[str]:
    done = {False: "was not certified", True: "was certified anyway (--certify-collapsed)"}
    return [f"- **{s['method']} at sigma = {s['sigma']:g} collapsed and {done[bool(s.get('certified'))]}**: "
            f"{s['collapsed']}." for s in summaries if s.get("collapsed")]


def _radii(results: Sequence[CertifyResults]) -> list[float]:
    largest = max((float(np.max(r.radius, initial=0.0)) for r in results), default=0.0)
    return default_radii(max(largest, 0.0), RADIUS_STEP)


#: The statistics of :func:`~catrs_plugin.results.metrics.summarize` that a row of the summaries shows.
STATISTICS = ("n", "acr", "certified_accuracy", "abstain", "N", "alpha", "p_lower_cdf", "at_cap",
              "samples_per_example")


def _statistics(results: CertifyResults, radii: Sequence[float], sigma: float, n: int, alpha: float) -> dict[str, Any]:
    stats = summarize(results, radii, sigma, n, alpha)
    return {**{key: stats[key] for key in STATISTICS}, "certify_seconds_per_example": stats["seconds_per_example"]}


def published_rows(directory: str | Path, dataset: str, sigma: float,
                   methods: Sequence[str]) -> list[tuple[dict[str, Any], CertifyResults]]:
    """The published result files of ``methods`` for ``dataset`` at ``sigma`` under ``directory``, each with
    the start of its summary row (``source``: published; no timings: they were measured elsewhere)."""
    found = published_results(directory, dataset, sigma)
    return [({"method": name, "sigma": sigma, "source": PUBLISHED, "published_by": CATRS_RELEASE.name,
              "certify_path": str(found[name]), "train_seconds_per_epoch": None, "certified": True},
             read_certify_results(found[name])) for name in methods if name in found]


def merge_summaries(out: Path, comparisons: Sequence[Comparison], dataset: str, preset: str, budget: Budget,
                    attack_eps: Sequence[float], published: str | Path | None = None,
                    procedure: str = "CERTIFY") -> None:
    """Read every certified run's rows (and the published rows of the same methods, from ``published``),
    fill in each row's statistics and write all summary files (``procedure`` names how the runs were
    certified in the settings line)."""
    everything: list[tuple[dict[str, Any], CertifyResults]] = []
    for comparison in comparisons:
        certified = {o.name: read_certify_results(o.summary["certify_path"])
                     for o in comparison.outcomes if o.certified}
        others = [] if published is None else \
            published_rows(published, dataset, comparison.sigma, [o.name for o in comparison.outcomes])
        comparison.radii = _radii(list(certified.values()) + [results for _, results in others])
        for outcome in comparison.outcomes:
            if not outcome.certified:
                outcome.summary.update({**dict.fromkeys(STATISTICS), "n": 0, "certified_accuracy": {},
                                        "certify_seconds_per_example": None})
                continue
            outcome.summary.update(_statistics(certified[outcome.name], comparison.radii, comparison.sigma,
                                               budget.n, budget.alpha))
            everything.append((outcome.summary, certified[outcome.name]))
        for summary, results in others:
            summary.update(_statistics(results, comparison.radii, comparison.sigma, CATRS_RELEASE.n,
                                       CATRS_RELEASE.alpha))
            everything.append((summary, results))
        comparison.published = [summary for summary, _ in others]
        curves = {**{o.name: (o.summary, certified[o.name]) for o in comparison.outcomes if o.certified},
                  **{f"{summary['method']} ({PUBLISHED})": (summary, results) for summary, results in others}}
        write_sigma_summary(comparison, curves, dataset, preset, budget, attack_eps, procedure)
    write_table(out, comparisons, everything, dataset, preset, budget, procedure)


def _settings_line(budget: Budget, n: int | None, published: bool = False, procedure: str = "CERTIFY") -> str:
    examples = f"the same {n} test examples" if n else "the same test examples"
    line = (f"ACR and certified accuracy (%) at each L2 radius; {procedure} with N0={budget.n0}, N={budget.n}, "
            f"alpha={budget.alpha} on {examples} for every method; pA<=p: % of inputs whose pA_lower "
            "(Phi(radius / sigma) if certified correctly, else 0) is at most p; at cap: % of inputs certified at "
            "the largest pA_lower N and alpha allow, where N limits the radius, not the model")
    if procedure != "CERTIFY":
        line += ("; a sequential run's ACR is not comparable with exact CERTIFY's, its certified accuracy at the "
                 "decided radii is; samples: mean estimation samples per input")
    if published:
        line += (f"; published rows: {CATRS_RELEASE.name}, its own model and test examples, certified with "
                 f"N0={CATRS_RELEASE.n0}, N={CATRS_RELEASE.n}, alpha={CATRS_RELEASE.alpha}")
    return line


def write_sigma_summary(comparison: Comparison, curves: dict[str, tuple[dict[str, Any], CertifyResults]],
                        dataset: str, preset: str, budget: Budget, attack_eps: Sequence[float],
                        procedure: str = "CERTIFY") -> None:
    """``summary.md``, ``summary.csv``, ``summary.json`` and the plots of one noise level; ``curves`` maps
    each plotted label to its row's summary and results."""
    from catrs_plugin.results.plots import plot_certified_accuracy, plot_p_lower_cdf

    directory, sigma = comparison.directory, comparison.sigma
    summaries = comparison.summaries + comparison.published
    directory.mkdir(parents=True, exist_ok=True)
    header, rows = summary_table(summaries, comparison.radii, attack_eps, percent=True)
    n = next((s["n"] for s in comparison.summaries if s.get("certified")), None)
    notes = _collapse_notes(summaries)
    heading = [f"# {dataset}, sigma = {sigma}, preset {preset}",
               _settings_line(budget, n, bool(comparison.published), procedure)
               + ("; PGD columns: accuracy (%) of the smoothed classifier (PREDICT) on ART L2 PGD examples at that eps"
                  if attack_eps else "") + "."]
    markdown = "\n".join(
        [heading[0], "", heading[1], "",
         render_table(header, rows, markdown=True), "", *(notes + [""] if notes else [])]
    )
    write_atomic(directory / "summary.md", markdown)
    write_atomic(directory / "summary.tex", _latex(heading, header, rows, notes))
    header, rows = summary_table(summaries, comparison.radii, attack_eps, percent=False)
    write_atomic(directory / "summary.csv", _csv(header + ["collapsed"],
                                                 [row + [s.get("collapsed") or ""] for row, s in zip(rows, summaries)]))
    write_atomic(directory / "summary.json", to_json({
        "dataset": dataset, "sigma": sigma, "preset": preset, "budget": asdict(budget),
        "radii": comparison.radii, "attack_eps": list(attack_eps), "methods": summaries,
    }))
    if curves:
        # published rows were certified with their own N and alpha: the title names the budget's only without them
        settings = {} if comparison.published else {"n0": budget.n0, "n": budget.n, "alpha": budget.alpha}
        plot_certified_accuracy({label: results for label, (_, results) in curves.items()},
                                directory / "certified_accuracy.png", title=f"{dataset}, preset {preset}",
                                sigma=sigma, **settings)
        plot_p_lower_cdf({label: implied_p_lower(results.radius, results.correct, sigma, s["N"], s["alpha"])
                          for label, (s, results) in curves.items()}, directory / "p_lower_cdf.png",
                         title=f"{dataset}, preset {preset}", sigma=sigma, **settings)


def write_table(out: Path, comparisons: Sequence[Comparison], everything: Sequence[tuple[dict, CertifyResults]],
                dataset: str, preset: str, budget: Budget, procedure: str = "CERTIFY") -> None:
    """``summary.md`` and ``summary.csv`` of every noise level: one row per sigma and method, shared radii."""
    radii = _radii([results for _, results in everything])
    rows_in = []
    for comparison in comparisons:
        for original in comparison.summaries + comparison.published:
            summary = dict(original)
            if summary.get("certified"):
                results = next(r for s, r in everything if s is original)
                summary["certified_accuracy"] = summarize(results, radii)["certified_accuracy"]
            rows_in.append(summary)
    header, rows = summary_table(rows_in, radii, (), percent=True, with_sigma=True)
    n = next((s["n"] for s in rows_in if s.get("certified") and s.get("source") != PUBLISHED), None)
    notes = _collapse_notes(rows_in)
    published = any(c.published for c in comparisons)
    heading = [f"# {dataset}, preset {preset}, sigma = {', '.join(f'{c.sigma:g}' for c in comparisons)}",
               _settings_line(budget, n, published, procedure) + "; each noise level's own files are in noise_<sigma>/."]
    write_atomic(out / "summary.md", "\n".join(
        [heading[0], "", heading[1], "", render_table(header, rows, markdown=True), "",
         *(notes + [""] if notes else [])]))
    write_atomic(out / "summary.tex", _latex(heading, header, rows, notes))
    header, rows = summary_table(rows_in, radii, (), percent=False, with_sigma=True)
    write_atomic(out / "summary.csv", _csv(header + ["collapsed"],
                                           [row + [s.get("collapsed") or ""] for row, s in zip(rows, rows_in)]))


__all__ = ["RADIUS_STEP", "check_settings", "merge_summaries", "published_rows", "summary_table"]
