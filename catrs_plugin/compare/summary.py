"""The summary files of ``catrs compare``: merged from every run's result files once all runs finished.

Per noise level ``noise_<sigma>/summary.md`` (percentages), ``summary.csv`` (fractions),
``summary.json`` and ``certified_accuracy.png``; for the whole table ``summary.md`` and
``summary.csv`` with one row per noise level and method, as in the paper. A collapsed run has
no numbers: its row says ``collapsed`` and the reason is listed under the table; one certified
anyway (``--certify-collapsed``) has its numbers, its method marked ``(collapsed)`` and the
reason listed too.
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
from catrs_plugin.results.metrics import default_radii, format_radius, summarize
from catrs_plugin.results.report import render_table
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
    """Header and rows: (sigma,) method, n, ACR, certified accuracy per radius, timings, empirical accuracy."""
    header = [*(["sigma"] if with_sigma else []), "method", "n", "ACR", *(f"{r:.2f}" for r in radii),
              "train s/epoch", "certify s/example", *(f"PGD {eps:g}" for eps in attack_eps)]

    def accuracy(value: float) -> str:
        return f"{100 * value:.1f}" if percent else f"{value:.6g}"

    rows = []
    for s in summaries:
        name = f"{s['method']} ({COLLAPSED})" if s.get("collapsed") and s.get("certified") else s["method"]
        lead = [*([f"{s['sigma']:g}"] if with_sigma else []), name]
        if not s.get("certified"):
            rows.append([*lead, "-", COLLAPSED, *("-" for _ in radii), f"{s['train_seconds_per_epoch']:.3g}", "-",
                         *("-" for _ in attack_eps)])
            continue
        rows.append([
            *lead, str(s["n"]), f"{s['acr']:.3f}" if percent else f"{s['acr']:.6g}",
            *(accuracy(s["certified_accuracy"][format_radius(r)]) for r in radii),
            f"{s['train_seconds_per_epoch']:.3g}", f"{s['certify_seconds_per_example']:.3g}",
            *(accuracy(s["empirical_accuracy"][format_radius(eps)]) for eps in attack_eps),
        ])
    return header, rows


def _csv(header: list[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    return buffer.getvalue()


def _collapse_notes(summaries: Sequence[dict[str, Any]]) -> list[str]:
    done = {False: "was not certified", True: "was certified anyway (--certify-collapsed)"}
    return [f"- **{s['method']} at sigma = {s['sigma']:g} collapsed and {done[bool(s.get('certified'))]}**: "
            f"{s['collapsed']}." for s in summaries if s.get("collapsed")]


def _radii(results: Sequence[CertifyResults]) -> list[float]:
    largest = max((float(np.max(r.radius, initial=0.0)) for r in results), default=0.0)
    return default_radii(max(largest, 0.0), RADIUS_STEP)


def merge_summaries(out: Path, comparisons: Sequence[Comparison], dataset: str, preset: str, budget: Budget,
                    attack_eps: Sequence[float]) -> None:
    """Read every certified run's rows, fill in each outcome's statistics and write all summary files."""
    everything: list[tuple[dict[str, Any], CertifyResults]] = []
    for comparison in comparisons:
        certified = {o.name: read_certify_results(o.summary["certify_path"])
                     for o in comparison.outcomes if o.certified}
        comparison.radii = _radii(list(certified.values()))
        for outcome in comparison.outcomes:
            if not outcome.certified:
                outcome.summary.update({"n": 0, "acr": None, "certified_accuracy": {}, "abstain": None,
                                        "certify_seconds_per_example": None})
                continue
            stats = summarize(certified[outcome.name], comparison.radii)
            outcome.summary.update({
                "n": stats["n"], "acr": stats["acr"], "certified_accuracy": stats["certified_accuracy"],
                "abstain": stats["abstain"], "certify_seconds_per_example": stats["seconds_per_example"],
            })
            everything.append((outcome.summary, certified[outcome.name]))
        write_sigma_summary(comparison, certified, dataset, preset, budget, attack_eps)
    write_table(out, comparisons, everything, dataset, preset, budget)


def _settings_line(budget: Budget, n: int | None) -> str:
    examples = f"the same {n} test examples" if n else "the same test examples"
    return (f"ACR and certified accuracy (%) at each L2 radius; CERTIFY with N0={budget.n0}, N={budget.n}, "
            f"alpha={budget.alpha} on {examples} for every method")


def write_sigma_summary(comparison: Comparison, certified: dict[str, CertifyResults], dataset: str, preset: str,
                        budget: Budget, attack_eps: Sequence[float]) -> None:
    """``summary.md``, ``summary.csv``, ``summary.json`` and the plot of one noise level."""
    from catrs_plugin.results.plots import plot_certified_accuracy

    directory, sigma, summaries = comparison.directory, comparison.sigma, comparison.summaries
    directory.mkdir(parents=True, exist_ok=True)
    header, rows = summary_table(summaries, comparison.radii, attack_eps, percent=True)
    n = next((s["n"] for s in summaries if s.get("certified")), None)
    notes = _collapse_notes(summaries)
    markdown = "\n".join(
        [f"# {dataset}, sigma = {sigma}, preset {preset}", "",
         _settings_line(budget, n)
         + ("; PGD columns: accuracy (%) of the smoothed classifier (PREDICT) on ART L2 PGD examples at that eps"
            if attack_eps else "") + ".", "",
         render_table(header, rows, markdown=True), "", *(notes + [""] if notes else [])]
    )
    write_atomic(directory / "summary.md", markdown)
    header, rows = summary_table(summaries, comparison.radii, attack_eps, percent=False)
    write_atomic(directory / "summary.csv", _csv(header + ["collapsed"],
                                                 [row + [s.get("collapsed") or ""] for row, s in zip(rows, summaries)]))
    write_atomic(directory / "summary.json", json.dumps({
        "dataset": dataset, "sigma": sigma, "preset": preset, "budget": asdict(budget),
        "radii": comparison.radii, "attack_eps": list(attack_eps), "methods": summaries,
    }, indent=2))
    if certified:
        plot_certified_accuracy(certified, directory / "certified_accuracy.png", title=f"{dataset}, sigma = {sigma}")


def write_table(out: Path, comparisons: Sequence[Comparison], everything: Sequence[tuple[dict, CertifyResults]],
                dataset: str, preset: str, budget: Budget) -> None:
    """``summary.md`` and ``summary.csv`` of every noise level: one row per sigma and method, shared radii."""
    radii = _radii([results for _, results in everything])
    rows_in = []
    for comparison in comparisons:
        for outcome in comparison.outcomes:
            summary = dict(outcome.summary)
            if outcome.certified:
                results = next(r for s, r in everything if s is outcome.summary)
                summary["certified_accuracy"] = summarize(results, radii)["certified_accuracy"]
            rows_in.append(summary)
    header, rows = summary_table(rows_in, radii, (), percent=True, with_sigma=True)
    n = next((s["n"] for s in rows_in if s.get("certified")), None)
    notes = _collapse_notes(rows_in)
    write_atomic(out / "summary.md", "\n".join(
        [f"# {dataset}, preset {preset}, sigma = {', '.join(f'{c.sigma:g}' for c in comparisons)}", "",
         _settings_line(budget, n) + "; each noise level's own files are in noise_<sigma>/.", "",
         render_table(header, rows, markdown=True), "", *(notes + [""] if notes else [])]))
    header, rows = summary_table(rows_in, radii, (), percent=False, with_sigma=True)
    write_atomic(out / "summary.csv", _csv(header + ["collapsed"],
                                           [row + [s.get("collapsed") or ""] for row, s in zip(rows, rows_in)]))


__all__ = ["RADIUS_STEP", "check_settings", "merge_summaries", "summary_table"]
