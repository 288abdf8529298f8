"""Metrics beyond ACR (the pA_lower CDF, the fraction at the estimation cap, N and alpha) and published rows."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch

from catrs_plugin.certify.files import certify_to_file
from catrs_plugin.certify.stats import certified_radius, lower_confidence_bound
from catrs_plugin.cli import main
from catrs_plugin.compare import Budget, parse_methods, run_comparison
from catrs_plugin.plugins.registry import get_registry
from catrs_plugin.results.metrics import at_cap, cap_radius, estimation_cap, implied_p_lower, p_lower_cdf, summarize
from catrs_plugin.results.tsv import CERTIFY_HEADER, read_certify_results
from catrs_plugin.utils import provenance

#: sigma = 0.5, N = 100, alpha = 0.01: the cap is 0.01 ** (1 / 100) = 0.95499, radius 0.5 * 1.6953 = 0.848.
ROWS = [
    (0, 3, 3, "0.848", 1),   # at the cap: pA_lower 0.95499
    (1, 4, 4, "0.0", 1),     # certified at radius 0: pA_lower exactly 1/2
    (2, 5, 5, "0.2", 1),     # Phi(0.4) = 0.6554
    (3, 6, 6, "0.5", 1),     # Phi(1.0) = 0.8413
    (4, 7, 7, "0.7", 1),     # Phi(1.4) = 0.9192
    (5, 8, -1, "0.0", 0),    # abstained: no bound
    (6, 9, 2, "0.6", 0),     # another class certified: no bound on the true one
    (7, 1, 1, "0.759", 1),   # 99 of 100 successes, the largest radius below the cap: Phi(1.518) = 0.93549
]


@pytest.fixture
def small_tsv(tmp_path):
    path = tmp_path / "small.tsv"
    path.write_text("\n".join(["\t".join(CERTIFY_HEADER)]
                              + ["\t".join(map(str, row)) + "\t0:00:01" for row in ROWS]) + "\n")
    provenance.write_record(path, {"command": "certify", "sigma": 0.5, "N": 100, "alpha": 0.01, "dataset": "cifar10"})
    return path


def test_p_lower_cdf_and_cap_fraction_equal_hand_computed_values(small_tsv):
    assert estimation_cap(100, 0.01) == pytest.approx(0.954992586, rel=1e-9)
    assert f"{cap_radius(0.5, 100, 0.01):.3}" == "0.848"
    results = read_certify_results(small_tsv)
    p = implied_p_lower(results.radius, results.correct, 0.5, 100, 0.01)
    np.testing.assert_allclose(p, [0.954992586, 0.5, 0.6554217, 0.8413447, 0.9192433, 0.0, 0.0, 0.9354928], rtol=1e-6)
    assert list(p_lower_cdf(p, [0.5, 0.75, 0.9, 0.99])) == [3 / 8, 4 / 8, 5 / 8, 8 / 8]
    assert list(at_cap(results.radius, results.correct, 0.5, 100, 0.01)) == [True] + [False] * 7
    summary = summarize(results, [0.0, 0.5], 0.5, 100, 0.01)
    assert summary["acr"] == pytest.approx((0.848 + 0.2 + 0.5 + 0.7 + 0.759) / 8)
    assert summary["p_lower_cdf"] == {"0.5": 3 / 8, "0.75": 4 / 8, "0.9": 5 / 8, "0.99": 1.0}
    assert (summary["at_cap"], summary["N"], summary["alpha"], summary["sigma"]) == (1 / 8, 100, 0.01, 0.5)
    # With a larger N the cap is further out: nothing is at it; without N and alpha there is no cap.
    assert summarize(results, [0.0], 0.5, 1000, 0.01)["at_cap"] == 0.0
    unknown = summarize(results, [0.0])
    assert unknown["p_lower_cdf"] is None and unknown["at_cap"] is None


def test_a_radius_beyond_the_cap_means_other_settings():
    with pytest.raises(ValueError, match=r"radius 0.9 exceeds 0.8477.*N=100 and alpha=0.01.*other settings"):
        at_cap(np.array([0.9]), np.array([1]), 0.5, 100, 0.01)


@pytest.mark.parametrize("alpha", [0.1, 0.01, 0.001, 1e-4])
def test_the_cap_is_told_apart_from_the_next_radius_as_files_write_them(alpha):
    """Radii written with 3 significant digits: n of n successes is at the cap, n - 1 of n never is."""
    for n in (100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000):
        for sigma in (0.12, 0.25, 0.5, 1.0, 2.0):
            written = [float(f"{r:.3}") for r in certified_radius(lower_confidence_bound(np.array([n, n - 1]), n,
                                                                                           alpha), sigma)]
            assert list(at_cap(np.array(written), np.ones(2), sigma, n, alpha)) == [True, False], (n, sigma)


def test_certify_rows_of_a_perfect_model_are_at_the_cap_and_analyze_reads_the_settings(tmp_path, capsys):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([5.0, 0.0, 0.0]))  # always class 0
    x, y = np.zeros((4, 1, 2, 2), np.float32), np.array([0, 0, 1, 0])
    path = tmp_path / "perfect.tsv"
    certify_to_file(model, 3, 0.25, x, y, path, n0=20, n=200, alpha=0.001, progress=False)
    assert main(["analyze", str(path), "--format", "json", "--radii", "0"]) == 0
    (summary,) = json.loads(capsys.readouterr().out)
    assert (summary["sigma"], summary["N"], summary["alpha"]) == (0.25, 200, 0.001)  # from the provenance record
    assert summary["at_cap"] == 0.75 and summary["p_lower_cdf"]["0.9"] == 0.25  # the cap is 0.966
    assert main(["analyze", str(path), "--N", "1000"]) == 2
    assert "provenance record says N=200, not the 1000 given" in capsys.readouterr().err


def test_analyze_table_pa_plot_and_published_rows(small_tsv, reference_dir, tmp_path, capsys):
    plot = tmp_path / "pa.png"
    assert main(["analyze", str(small_tsv), "--published", str(reference_dir), "--radii", "0", "0.5",
                 "--pa-plot", str(plot), "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert plot.stat().st_size > 0 and "pA_lower CDF written to" in out
    lines = [line for line in out.splitlines() if line.startswith("|")]
    assert lines[0] == "| path | source | n | N | alpha | ACR | 0.00 | 0.50 | pA<=0.5 | pA<=0.75 | pA<=0.9 " \
                       "| pA<=0.99 | at cap |"
    assert lines[2].endswith("| measured | 8 | 100 | 0.01 | 0.376 | 75.0 | 50.0 | 37.5 | 50.0 | 62.5 | 100.0 | 12.5 |")
    published = [line for line in lines[3:] if "| published |" in line]
    assert len(published) == 7 and all("| 10000 | 100000 | 0.001 |" in line for line in published)
    assert "cat-rs/noise_0.5.tsv | published | 10000 | 100000 | 0.001 | 0.757 |" in out  # the paper's ACR at 0.5

    assert main(["analyze", "--published", str(reference_dir), "--dataset", "cifar10", "--sigma", "1.0",
                 "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [round(r["acr"], 3) for r in rows] == [0.511, 0.514, 0.790, 0.744, 0.756, 0.815]  # no SmoothMix at 1.0
    assert {r["source"] for r in rows} == {"published"} and all(0 < r["at_cap"] < 1 for r in rows)

    assert main(["analyze", "--published", str(reference_dir), "--sigma", "0.25"]) == 2
    assert "--published needs the dataset" in capsys.readouterr().err
    assert main(["analyze", "--published", str(reference_dir), "--dataset", "digits", "--sigma", "0.25"]) == 2
    assert "none for dataset 'digits'; they have: cifar10, cifar10c, imagenet" in capsys.readouterr().err


TINY = Budget(epochs=1, batch_size=256, lr=0.1, lr_step_size=1, soft_samples=20, n0=20, n=100, alpha=0.01,
              max_examples=12, train_examples=128)


def run(output, methods, sigma=0.25, **kwargs):
    (comparison,) = run_comparison("digits", parse_methods(methods, get_registry()), sigma, output, "quick", TINY,
                                   log=lambda line: None, certify_collapsed=True, **kwargs)
    return comparison


def test_compare_puts_published_rows_next_to_measured_ones(tmp_path):
    output = tmp_path / "out"
    run(output, methods="gaussian,catrs")
    release = tmp_path / "release" / "digits"
    (release / "cat-rs").mkdir(parents=True)
    shutil.copy(output / "noise_0.25" / "certify" / "gaussian.tsv", release / "cat-rs" / "noise_0.25.tsv")
    again = run(output, methods="gaussian,catrs", published=tmp_path / "release")
    assert [(o.epochs_trained, o.rows_certified) for o in again.outcomes] == [(0, 0), (0, 0)]  # nothing recomputed
    (row,) = again.published
    gaussian = again.outcomes[0].summary
    assert (row["method"], row["source"], row["N"], row["acr"]) == ("catrs", "published", 100_000, gaussian["acr"])
    markdown = (again.directory / "summary.md").read_text()
    assert "| catrs | published | 12 | 100000 | 0.001 |" in markdown and "published rows: CAT-RS release" in markdown
    assert re.search(r"\| gaussian( \(collapsed\))? \| measured \| 12 \| 100 \| 0\.01 \|", markdown)  # 1 tiny epoch
    whole = (output / "summary.md").read_text()
    assert "| 0.25 | catrs | published |" in whole
    with pytest.raises(ValueError, match="none for digits at sigma 0.5"):
        run(output, methods="gaussian", sigma=0.5, published=tmp_path / "release")
