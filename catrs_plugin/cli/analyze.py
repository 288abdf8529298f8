"""``catrs analyze``: ACR, certified accuracy and the metrics beyond ACR (the ``pA_lower`` distribution, the
fraction at the estimation cap, with the ``N`` and alpha they were computed at) of Cohen-format result files,
next to published results if asked; or, with ``--corruptions DIR...``, per-corruption ACR and accuracy and
their means (mACR, mAcc).

Files of exact CERTIFY and of sequential CERTIFY are both read. With a sequential file among them, the
``samples`` column gives the mean estimation samples per example: a sequential file's own column, an exact
file's ``N`` (from its provenance record or ``--N``; ``-`` when neither says). A sequential file's ACR is not
comparable with exact CERTIFY's (see :mod:`catrs_plugin.certify.sequential`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="ACR and certified accuracy of CERTIFY result files (or of corruption folders)",
        description="Summarise Cohen-format CERTIFY files: ACR and certified accuracy at chosen radii. "
                    "With --corruptions, summarise folders of <corruption>.tsv files (from "
                    "`catrs certify-corruptions`): ACR and accuracy per corruption, and mACR and mAcc.",
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="Cohen-format TSV files")
    parser.add_argument("--corruptions", nargs="+", default=None, metavar="DIR",
                        help="folders of <corruption>.tsv CERTIFY files, one per model")
    parser.add_argument("--radii", type=float, nargs="+", default=None, metavar="R",
                        help="radii for certified accuracy (default: 0.0 to 2.0 in steps of 0.25)")
    parser.add_argument("--format", choices=("table", "markdown", "json"), default="table", help="output format")
    parser.add_argument("--sigma", type=float, default=None,
                        help="noise level of the files, for the pA_lower metrics (default: from each file's "
                        "provenance record)")
    parser.add_argument("--N", type=int, default=None,
                        help="CERTIFY's N, for the estimation cap (default: from each file's provenance record)")
    parser.add_argument("--alpha", type=float, default=None,
                        help="CERTIFY's alpha, for the estimation cap (default: from each file's provenance record)")
    parser.add_argument("--published", default=None, metavar="DIR",
                        help="add the published rows of every method for the dataset and sigma, marked published, "
                        "from a folder laid out like the CAT-RS release (e.g. tests/data/catrs-official-certify)")
    parser.add_argument("--dataset", default=None,
                        help="dataset of the published rows (default: from the files' provenance records)")
    parser.add_argument("--pa-plot", default=None, metavar="PATH",
                        help="also draw the empirical CDF of pA_lower of every file in one figure (.png, .pdf, .svg)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from catrs_plugin.results.metrics import TABLE_RADII, summarize
    from catrs_plugin.results.published import CATRS_RELEASE, PUBLISHED, published_results
    from catrs_plugin.results.report import format_table, to_json

    if args.corruptions:
        if args.files or args.published:
            raise ValueError("give either result FILEs (and --published) or --corruptions DIR..., not both")
        return _run_corruptions(args)
    if not args.files and not args.published:
        raise ValueError("give result FILEs, --published DIR, or --corruptions DIR...")
    radii = args.radii if args.radii is not None else list(TABLE_RADII)
    summaries, rows = [], {}
    for path in args.files:
        results = _read(path)
        summaries.append(summarize(results, radii, **_settings(path, args)))
        rows[path] = (results, summaries[-1])
    if args.published:
        sigma, dataset = _published_target(args)
        for method, path in published_results(args.published, dataset, sigma).items():
            results = _read(str(path))
            summary = {**summarize(results, radii, sigma, CATRS_RELEASE.n, CATRS_RELEASE.alpha), "source": PUBLISHED}
            summaries.append(summary)
            rows[f"{method} ({PUBLISHED})"] = (results, summary)
    _fill_samples(summaries)
    if args.pa_plot:
        _plot(rows, args.pa_plot)
    if args.format == "json":
        print(to_json(summaries))
    else:
        print(format_table(summaries, radii, markdown=args.format == "markdown"))
    return 0


def _settings(path: str, args: argparse.Namespace) -> dict[str, Any]:
    from catrs_plugin.results.metrics import certification_settings

    settings = certification_settings(path, args.sigma, args.N, args.alpha)
    return {"sigma": settings["sigma"], "n": settings["N"], "alpha": settings["alpha"]}


def _fill_samples(summaries: list[dict[str, Any]]) -> None:
    """Next to a sequential file, an exact CERTIFY file's ``samples_per_example``: its ``N``, which every row drew."""
    if any(summary["samples_per_example"] is not None for summary in summaries):
        for summary in summaries:
            if summary["samples_per_example"] is None and summary["N"] is not None:
                summary["samples_per_example"] = float(summary["N"])


def _published_target(args: argparse.Namespace) -> tuple[float, str]:
    """The sigma and dataset the published rows are for: given, or what every file's record says."""
    from catrs_plugin.utils import provenance

    records = [provenance.read_record(path) or {} for path in args.files]
    found = {}
    for key, given, option in (("sigma", args.sigma, "--sigma"), ("dataset", args.dataset, "--dataset")):
        values = {record.get(key) for record in records} - {None}
        if given is None and len(values) != 1:
            raise ValueError(f"--published needs the {key} of the rows to put next to them: pass {option} "
                             f"(the files' records say {', '.join(map(str, sorted(values, key=str))) or 'nothing'})")
        found[key] = given if given is not None else values.pop()
    return float(found["sigma"]), str(found["dataset"])


def _plot(rows: dict[str, tuple[Any, dict[str, Any]]], path: str) -> None:
    from catrs_plugin.results.metrics import implied_p_lower
    from catrs_plugin.results.plots import plot_p_lower_cdf

    curves = {label: implied_p_lower(results.radius, results.correct, s["sigma"], s["N"], s["alpha"])
              for label, (results, s) in rows.items() if s["sigma"] is not None}
    if not curves:
        raise ValueError("--pa-plot needs each file's sigma: pass --sigma, or files with provenance records")
    print(f"pA_lower CDF written to {plot_p_lower_cdf(curves, path)}")


def _read(path: str):
    from catrs_plugin.results.tsv import read_certify_results

    if Path(path).is_dir():
        raise ValueError(f"FILE {path!r} is a folder: pass the result files in it (e.g. {path}/*.tsv), or "
                         f"--corruptions {path} for a folder of <corruption>.tsv files")
    results = read_certify_results(path)
    if not len(results):
        raise ValueError(f"FILE {path!r} holds no result rows (only the header); nothing to summarise")
    return results


def _run_corruptions(args: argparse.Namespace) -> int:
    from catrs_plugin.results.corruptions import format_corruption_table, summarize_corruptions
    from catrs_plugin.results.report import to_json

    summaries = [summarize_corruptions(directory) for directory in args.corruptions]
    if args.format == "json":
        print(to_json(summaries))
    else:
        print(format_corruption_table(summaries, markdown=args.format == "markdown"))
    return 0
