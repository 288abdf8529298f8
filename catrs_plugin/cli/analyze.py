"""``catrs analyze``: ACR, certified accuracy and the metrics beyond ACR (the ``pA_lower`` distribution, the
fraction at the estimation cap, with the ``N`` and alpha they were computed at) of Cohen-format result files,
next to published results if asked; or, with ``--corruptions DIR...``, per-corruption ACR and accuracy and
their means (mACR, mAcc).

Files of exact CERTIFY and of sequential CERTIFY are both read. With a sequential file among them, the
``samples`` column gives the mean estimation samples per example: a sequential file's own column, an exact
file's ``N`` (from its provenance record or ``--N``; ``-`` when neither says). A sequential file's ACR is not
comparable with exact CERTIFY's (see :mod:`catrs_plugin.certify.sequential`).

Tables print as aligned text, Markdown, LaTeX (booktabs) or JSON (``--format``). ``--plot IMAGE`` draws
certified accuracy (%) against radius, one curve per row, titled with the sigma, N and alpha every row
shares (from the files' provenance records or ``--sigma``/``--N``/``--alpha``; the paper's released
files carry no record, and ``--title`` names them instead)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from catrs_plugin.cli._common import add_format_argument, table_style

#: Summary entries a certified-accuracy plot names in its title when every row shares them, and their keywords.
PLOTTED_SETTINGS = {"sigma": "sigma", "N": "n", "alpha": "alpha"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="ACR and certified accuracy of CERTIFY result files (or of corruption folders); tables, LaTeX, plots",
        description="Summarise Cohen-format CERTIFY files: ACR and certified accuracy at chosen radii. "
                    "With --corruptions, summarise folders of <corruption>.tsv files (from "
                    "`catrs certify-corruptions`): ACR and accuracy per corruption, and mACR and mAcc.",
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="Cohen-format TSV files")
    parser.add_argument("--corruptions", nargs="+", default=None, metavar="DIR",
                        help="folders of <corruption>.tsv CERTIFY files, one per model")
    parser.add_argument("--radii", type=float, nargs="+", default=None, metavar="R",
                        help="radii for certified accuracy (default: 0.0 to 2.0 in steps of 0.25)")
    add_format_argument(parser, extra=("json",))
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
    parser.add_argument("--plot", default=None, metavar="IMAGE",
                        help="also draw certified accuracy (%%) against radius of every file in one figure (.png, "
                             ".pdf, .svg), titled with the sigma, N and alpha they share")
    parser.add_argument("--title", default=None, help="first line of --plot's title (e.g. the data set)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from catrs_plugin.results.metrics import TABLE_RADII, summarize
    from catrs_plugin.results.published import CATRS_RELEASE, PUBLISHED, published_results
    from catrs_plugin.results.report import format_table, to_json

    if args.corruptions:
        if args.files or args.published:
            raise ValueError("give either result FILEs (and --published) or --corruptions DIR..., not both")
        if args.plot or args.pa_plot:
            raise ValueError("--plot and --pa-plot draw result FILEs, not --corruptions folders")
        return _run_corruptions(args)
    if not args.files and not args.published:
        raise ValueError("give result FILEs, --published DIR, or --corruptions DIR...")
    radii = args.radii if args.radii is not None else list(TABLE_RADII)
    summaries, rows = [], {}
    for path, label in zip(args.files, short_labels(args.files)):
        results = _read(path)
        summaries.append(summarize(results, radii, **_settings(path, args)))
        rows[label] = (results, summaries[-1])
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
        print(format_table(summaries, radii, **table_style(args.format)))
    if args.plot:
        _plot_certified_accuracy(rows, args.plot, args.title)
    return 0


def short_labels(paths: Sequence[str]) -> list[str]:
    """Legend labels for result files: their paths without the folders all of them share, without a file name
    all of them share, and without ``.tsv`` (``a/cohen/noise_0.25.tsv``, ``a/catrs/noise_0.25.tsv`` -> ``cohen``,
    ``catrs``); the paths themselves when that would not tell them apart."""
    parts = [Path(path).with_suffix("").parts if Path(path).suffix == ".tsv" else Path(path).parts for path in paths]
    shared = 0
    while all(len(p) > shared + 1 for p in parts) and len({p[shared] for p in parts}) == 1:
        shared += 1
    parts = [p[shared:] for p in parts]
    if len(parts) > 1 and all(len(p) > 1 for p in parts) and len({p[-1] for p in parts}) == 1:
        parts = [p[:-1] for p in parts]
    labels = ["/".join(p) for p in parts]
    return labels if len(set(labels)) == len(labels) else list(paths)


def shared_settings(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The plot keywords (``sigma``, ``n``, ``alpha``) whose values every summary shares (and knows)."""
    return {keyword: summaries[0][key] for key, keyword in PLOTTED_SETTINGS.items()
            if summaries and summaries[0].get(key) is not None and all(s.get(key) == summaries[0][key]
                                                                        for s in summaries)}


def _plot_certified_accuracy(rows: dict[str, tuple[Any, dict[str, Any]]], path: str, title: str | None) -> None:
    from catrs_plugin.results.plots import plot_certified_accuracy

    settings = shared_settings([summary for _, summary in rows.values()])
    written = plot_certified_accuracy({label: results for label, (results, _) in rows.items()}, path, title=title,
                                      **settings)
    print(f"certified accuracy of {len(rows)} result file(s) drawn in {written}")


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
    settings = shared_settings([summary for _, summary in rows.values()])
    print(f"pA_lower CDF written to {plot_p_lower_cdf(curves, path, **settings)}")


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
        print(format_corruption_table(summaries, **table_style(args.format)))
    return 0
