"""Cohen-format files: writing, reading, resuming, and the paper's numbers from the released files."""

import json

import numpy as np
import pytest

from catrs_plugin.cli import main
from catrs_plugin.results.metrics import average_certified_radius, certified_accuracy, default_radii
from catrs_plugin.results.tsv import (
    CERTIFY_HEADER,
    ResultWriter,
    format_certify_row,
    parse_time,
    read_certify_results,
)
from catrs_plugin.utils import provenance

SETTINGS = {"model": "a", "sigma": 0.25}

PAPER_ACR = {
    "cohen": {"0.25": 0.424, "0.5": 0.525, "1.0": 0.511},
    "stab": {"0.25": 0.420, "0.5": 0.531, "1.0": 0.514},
    "salman": {"0.25": 0.544, "0.5": 0.684, "1.0": 0.790},
    "macer": {"0.25": 0.531, "0.5": 0.691, "1.0": 0.744},
    "consistency": {"0.25": 0.552, "0.5": 0.720, "1.0": 0.756},
    "smoothmix": {"0.25": 0.553, "0.5": 0.736},
    "cat-rs": {"0.25": 0.562, "0.5": 0.757, "1.0": 0.815},
}


def test_row_format_matches_certify_py():
    assert format_certify_row(3, 7, 7, 0.52912, 8.591588) == "3\t7\t7\t0.529\t1\t0:00:08.591588"
    assert format_certify_row(4, 1, -1, 0.0, 0.5) == "4\t1\t-1\t0.0\t0\t0:00:00.500000"
    assert parse_time("0:00:08.591588") == pytest.approx(8.591588)
    assert parse_time("1 day, 1:00:00") == pytest.approx(90000.0)


def test_writer_resumes_after_last_complete_row(tmp_path):
    path = tmp_path / "out.tsv"
    with ResultWriter(path, SETTINGS) as writer:
        writer.write(format_certify_row(0, 1, 1, 0.5, 1.0))
        writer.write(format_certify_row(5, 2, 3, 0.25, 1.0))
    with open(path, "a") as handle:
        handle.write("10\t1\t1\t0.")  # a row cut off by a crash
    writer = ResultWriter(path, SETTINGS)
    assert writer.done == {0, 5}
    writer.write(format_certify_row(10, 1, 1, 0.75, 1.0))
    writer.close()
    results = read_certify_results(path)
    assert list(results.idx) == [0, 5, 10]
    assert list(results.correct) == [1, 0, 1]


def test_writer_refuses_a_foreign_file(tmp_path):
    path = tmp_path / "other.tsv"
    path.write_text("something else\n")
    provenance.write_record(path, SETTINGS)
    with pytest.raises(ValueError, match="header"):
        ResultWriter(path, SETTINGS)


def test_reader_names_file_and_line_of_a_bad_row(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("\t".join(CERTIFY_HEADER) + "\n0\t1\t1\tabc\t1\t0:00:01\n")
    with pytest.raises(ValueError, match=r"bad.tsv:2"):
        read_certify_results(path)


def test_metrics_definitions():
    radius = np.array([0.5, 1.0, 0.0, 2.0])
    correct = np.array([1, 1, 0, 0])
    assert average_certified_radius(radius, correct) == pytest.approx(1.5 / 4)
    assert list(certified_accuracy(radius, correct, [0.0, 0.5, 0.75, 1.0, 1.5])) == [0.5, 0.5, 0.25, 0.25, 0.0]
    assert default_radii(1.0) == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_every_released_file_ships_with_the_tests(reference_dir):
    """The release the README's command and these tests read: 20 CIFAR-10, 105 CIFAR-10-C, 1 ImageNet file."""
    assert len(list(reference_dir.glob("cifar10/*/noise_*.tsv"))) == sum(map(len, PAPER_ACR.values())) == 20
    assert len(list(reference_dir.glob("cifar10c/*/*.tsv"))) == 7 * 15
    assert (reference_dir / "imagenet" / "cat-rs_noise_1.0.tsv").is_file()
    assert "MIT License" in (reference_dir / "LICENSE").read_text()


@pytest.mark.parametrize("method", sorted(PAPER_ACR))
def test_analyze_reproduces_the_papers_cifar10_acr(reference_dir, capsys, method):
    expected = PAPER_ACR[method]
    files = [str(reference_dir / "cifar10" / method / f"noise_{s}.tsv") for s in expected]
    assert main(["analyze", *files, "--format", "json"]) == 0
    summaries = json.loads(capsys.readouterr().out)
    assert [s["path"] for s in summaries] == files
    for summary, sigma in zip(summaries, expected):
        assert summary["n"] == 10_000
        assert round(summary["acr"], 3) == expected[sigma]
        assert 0.0 <= summary["certified_accuracy"]["0.5"] <= summary["certified_accuracy"]["0.0"] <= 1.0


def test_analyze_reproduces_imagenet_and_certified_accuracy(reference_dir, capsys):
    imagenet = reference_dir / "imagenet" / "cat-rs_noise_1.0.tsv"
    cifar = reference_dir / "cifar10" / "cat-rs" / "noise_0.25.tsv"
    assert main(["analyze", str(imagenet), str(cifar), "--radii", "0", "0.25", "0.5", "0.75", "--format", "json"]) == 0
    inet, cat = json.loads(capsys.readouterr().out)
    assert (inet["n"], round(inet["acr"], 3)) == (500, 1.071)
    # CAT-RS, CIFAR-10, sigma = 0.25 row of the paper's Table 1: 76.3 / 68.1 / 58.8 / 48.2.
    assert [round(100 * cat["certified_accuracy"][r], 1) for r in ("0.0", "0.25", "0.5", "0.75")] == [76.3, 68.1, 58.8, 48.2]


def test_analyze_table_and_markdown(reference_dir, capsys):
    path = str(reference_dir / "cifar10" / "cohen" / "noise_0.5.tsv")
    assert main(["analyze", path, "--format", "markdown", "--radii", "0", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "| path | n | ACR | 0.00 | 1.00 |"
    assert "| 0.525 |" in lines[2]


def test_analyze_missing_file_is_a_clear_error(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nope.tsv")]) == 2
    assert "nope.tsv" in capsys.readouterr().err


def test_analyze_latex_is_a_booktabs_tabular_with_escaped_cells(reference_dir, capsys):
    path = str(reference_dir / "cifar10" / "cohen" / "noise_0.5.tsv")
    assert main(["analyze", path, "--format", "latex", "--radii", "0", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[:4] == [r"\begin{tabular}{lrrrr}", r"\toprule", r"path & n & ACR & 0.00 & 1.00 \\", r"\midrule"]
    assert lines[4].startswith(path.replace("_", r"\_") + " & 10000 & 0.525 & ") and lines[4].endswith(r" \\")
    assert lines[5:] == [r"\bottomrule", r"\end{tabular}"]


def test_latex_escapes_every_special_character():
    from catrs_plugin.results.report import latex_escape, render_table

    assert latex_escape(r"a_b & 5% $x$ #1 {y} ~^\z") == (r"a\_b \& 5\% \$x\$ \#1 \{y\} "
                                                          r"\textasciitilde{}\textasciicircum{}\textbackslash{}z")
    with pytest.raises(ValueError, match="either markdown or latex"):
        render_table(["a"], [["1"]], markdown=True, latex=True)


def test_corruption_table_in_latex(reference_dir, capsys):
    folder = next(path for path in sorted((reference_dir / "cifar10c").iterdir()) if path.is_dir())
    assert main(["analyze", "--corruptions", str(folder), "--format", "latex"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == r"\begin{tabular}{lrr}" and lines[-2:] == [r"\bottomrule", r"\end{tabular}"]
    assert lines[-3].startswith(r"mean (mACR, mAcc) & ")


def test_plots_carry_the_settings_and_methods_in_percent(reference_dir):
    from catrs_plugin.results.plots import certified_accuracy_figure

    curves = {name: read_certify_results(reference_dir / "cifar10" / name / "noise_0.25.tsv")
              for name in ("cat-rs", "cohen")}
    figure = certified_accuracy_figure(curves, title="CIFAR-10", sigma=0.25, n=100_000, alpha=0.001, n0=100)
    axes = figure.axes[0]
    assert axes.get_title() == "CIFAR-10\n$\\sigma$ = 0.25, $N_0$ = 100, $N$ = 100,000, $\\alpha$ = 0.001"
    assert [text.get_text() for text in axes.get_legend().get_texts()] == ["cat-rs (ACR 0.562)", "cohen (ACR 0.424)"]
    assert axes.get_ylabel() == "certified accuracy (%)" and axes.get_ylim() == (0, 100)
    # the curve at radius 0 is the table's certified accuracy at 0 in percent: 76.3 for CAT-RS
    assert round(axes.get_lines()[0].get_ydata()[0], 1) == 76.3


def test_analyze_plots_the_files_with_the_settings_they_share(reference_dir, tmp_path, capsys):
    from catrs_plugin.cli.analyze import shared_settings, short_labels

    files = [str(reference_dir / "cifar10" / name / "noise_0.25.tsv") for name in ("cat-rs", "cohen")]
    assert short_labels(files) == ["cat-rs", "cohen"]
    assert short_labels(["a/x.tsv", "b/y.tsv"]) == ["a/x", "b/y"]
    assert short_labels(["x.tsv", "x.tsv"]) == ["x.tsv", "x.tsv"]  # not told apart: the paths as given
    known = {"sigma": 0.5, "N": 500, "alpha": 0.001}
    assert shared_settings([known, dict(known)]) == {"sigma": 0.5, "n": 500, "alpha": 0.001}
    assert shared_settings([known, {**known, "N": 1000}]) == {"sigma": 0.5, "alpha": 0.001}  # N differs: not named
    assert shared_settings([{"sigma": None, "N": None, "alpha": None}]) == {}  # the released files carry no record
    image = tmp_path / "plot.png"
    assert main(["analyze", *files, "--plot", str(image), "--title", "CIFAR-10", "--sigma", "0.25"]) == 0
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"certified accuracy of 2 result file(s) drawn in {image}" in capsys.readouterr().out
    assert main(["analyze", "--corruptions", str(tmp_path), "--plot", str(image)]) == 2
    assert "--plot and --pa-plot draw result FILEs" in capsys.readouterr().err
