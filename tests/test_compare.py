"""``catrs compare`` on a tiny budget: identical settings, teacher reuse, resume, determinism, outputs."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import catrs_plugin.compare.run as compare
from catrs_plugin.cli import main
from catrs_plugin.compare import Budget, parse_methods, run_comparison
from catrs_plugin.plugins.registry import get_registry

TINY = Budget(epochs=1, batch_size=256, lr=0.1, lr_step_size=1, soft_samples=20, n0=20, n=100, alpha=0.01,
              max_examples=12, train_examples=128)
METHODS = "gaussian,smoothadv,catrs"  # the teacher's own run, a chunked attack method, the soft-label method


def run(output, methods=METHODS, sigma=0.25, **kwargs):
    kwargs.setdefault("log", lambda line: None)
    (comparison,) = run_comparison("digits", parse_methods(methods, get_registry()), sigma, output, "quick", TINY,
                                   certify_collapsed=True, **kwargs)
    return comparison


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every checkpoint, soft-label and result file (not the rewritten summaries) by relative path."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.suffix in (".pt", ".npy", ".tsv")}


def rows_without_time(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return [row[:-1] for row in csv.reader(handle, delimiter="\t")]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished tiny comparison, shared by the tests below (what it logged is in ``log.txt``)."""
    output = tmp_path_factory.mktemp("compare")
    lines = []
    comparison = run(output, log=lines.append)
    (output / "log.txt").write_text("\n".join(lines))
    return output, comparison


def test_outputs_and_shared_teacher(finished):
    output, comparison = finished
    assert [o.name for o in comparison.outcomes] == ["gaussian", "smoothadv", "catrs"]
    # The Gaussian run at sigma = 0.25 is the teacher, trained before the soft labels.
    assert [(o.epochs_trained, o.rows_certified) for o in comparison.outcomes] == [(0, 12), (1, 12), (1, 12)]
    assert comparison.soft_labels_computed
    # At sigma = 0.25 the Gaussian run is the teacher: one checkpoint, trained once.
    assert (output / "teacher" / "gaussian_noise_0.25.pt").exists()
    assert not (output / "noise_0.25" / "checkpoints" / "gaussian.pt").exists()

    directory = comparison.directory
    for name in ("gaussian", "smoothadv", "catrs"):
        rows = rows_without_time(directory / "certify" / f"{name}.tsv")
        assert rows[0] == ["idx", "label", "predict", "radius", "correct"]
        assert [int(r[0]) for r in rows[1:]] == list(range(12))  # the same examples for every method
    summary = json.loads((directory / "summary.json").read_text())
    assert summary["radii"][0] == 0.0 and all(b - a == 0.25 for a, b in zip(summary["radii"], summary["radii"][1:]))
    largest = max(max(float(r[3]) for r in rows_without_time(directory / "certify" / f"{m}.tsv")[1:])
                  for m in ("gaussian", "smoothadv", "catrs"))
    assert summary["radii"][-1] <= largest < summary["radii"][-1] + 0.25
    for entry in summary["methods"]:
        assert entry["n"] == 12 and entry["epochs"] == 1 and entry["cpu_threads"] == torch.get_num_threads()
        assert entry["train_seconds_per_epoch"] > 0 and entry["certify_seconds_per_example"] > 0
        assert set(entry["certified_accuracy"]) == {repr(r) for r in summary["radii"]}
    assert [e["preset"] for e in summary["methods"]] == ["paper", "quick", "paper"]  # quick where defined
    with open(directory / "summary.csv", newline="") as handle:
        table = list(csv.reader(handle))
    assert table[0][:5] == ["method", "n", "N", "alpha", "ACR"] and "train s/epoch" in table[0] and len(table) == 4
    header = table[0]
    assert header[header.index("pA<=0.5"):header.index("at cap") + 1] == [
        "pA<=0.5", "pA<=0.75", "pA<=0.9", "pA<=0.99", "at cap"]
    assert [row[2:4] for row in table[1:]] == [["100", "0.01"]] * 3  # the N and alpha of every ACR
    assert float(table[1][4]) == pytest.approx(summary["methods"][0]["acr"], rel=1e-5)
    for entry, row in zip(summary["methods"], table[1:]):
        assert float(row[header.index("at cap")]) == pytest.approx(entry["at_cap"])
        assert float(row[header.index("pA<=0.5")]) == pytest.approx(entry["p_lower_cdf"]["0.5"])
        assert entry["p_lower_cdf"]["0.5"] == pytest.approx(1 - entry["certified_accuracy"]["0.0"], abs=1 / 12)
    markdown = (directory / "summary.md").read_text()
    assert "| method | n | N | alpha | ACR | 0.00 |" in markdown and "| catrs" in markdown
    latex = (directory / "summary.tex").read_text().splitlines()
    assert latex[0] == "% digits, sigma = 0.25, preset quick" and latex[1].startswith("% ACR and certified accuracy")
    table = next(i for i, line in enumerate(latex) if not line.startswith("%"))  # after the heading and the notes
    assert latex[table].startswith(r"\begin{tabular}{l")
    assert latex[table + 2].startswith(r"method & n & N & alpha & ACR & 0.00 & ")
    assert latex[table + 4].startswith("gaussian") and " & 12 & 100 & 0.01 & " in latex[table + 4]
    assert latex[-1] == r"\end{tabular}"
    assert (directory / "certified_accuracy.png").stat().st_size > 0
    assert (directory / "p_lower_cdf.png").stat().st_size > 0


def test_log_lines_say_which_preset_is_which_and_announce_each_run_once(finished):
    lines = (finished[0] / "log.txt").read_text().splitlines()
    assert lines[0].startswith("digits: 3 method(s) at sigma 0.25, budget of preset quick (1 epochs, CERTIFY N0=20 N=100 ")
    trained = [line for line in lines if line.startswith("[train]")]
    assert trained == [
        "[train] gaussian at sigma=0.25 (the teacher): paper preset's hyper-parameters {}, 1 epochs, lr 0.1",
        "[train] smoothadv at sigma=0.25: quick preset's hyper-parameters "
        f"{get_registry().method('smoothadv').hyperparameters(0.25, 'quick')}, 1 epochs, lr 0.1",
        "[train] catrs at sigma=0.25: paper preset's hyper-parameters "
        f"{get_registry().method('catrs').hyperparameters(0.25, 'paper')}, 1 epochs, lr 0.1",
    ]
    assert sum(line.startswith("[soft labels]") for line in lines) == 1
    assert [line.split(":")[0] for line in lines if line.startswith("[certify]")] == [
        f"[certify] {name} at sigma=0.25" for name in ("gaussian", "smoothadv", "catrs")]


def test_rerun_recomputes_nothing(finished):
    output, _ = finished
    before = snapshot(output)
    again = run(output)
    assert [(o.epochs_trained, o.rows_certified) for o in again.outcomes] == [(0, 0)] * 3
    assert not again.soft_labels_computed
    assert snapshot(output) == before


def test_other_sigma_reuses_the_teacher(finished):
    output, _ = finished
    teacher = (output / "teacher" / "gaussian_noise_0.25.pt").read_bytes()
    result = run(output, methods="catrs", sigma=0.5)
    assert not result.soft_labels_computed and result.outcomes[0].epochs_trained == 1
    assert (output / "teacher" / "gaussian_noise_0.25.pt").read_bytes() == teacher


def test_interrupted_run_resumes_to_the_same_numbers(finished, tmp_path, monkeypatch):
    reference_dir, reference = finished
    calls = []
    original = compare.certify_to_file

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(compare, "certify_to_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path)
    monkeypatch.setattr(compare, "certify_to_file", original)
    resumed = run(tmp_path)
    assert [o.epochs_trained for o in resumed.outcomes] == [0, 0, 1]  # smoothadv's checkpoint was finished
    assert [o.rows_certified for o in resumed.outcomes] == [0, 12, 12]
    for ours, theirs in zip(resumed.summaries, reference.summaries):  # same numbers on the CPU
        assert (ours["acr"], ours["certified_accuracy"]) == (theirs["acr"], theirs["certified_accuracy"])
    for name in ("gaussian", "smoothadv", "catrs"):
        assert rows_without_time(tmp_path / "noise_0.25" / "certify" / f"{name}.tsv") == rows_without_time(
            reference_dir / "noise_0.25" / "certify" / f"{name}.tsv")
    with pytest.raises(ValueError, match="other settings.*budget.epochs"):
        run_comparison("digits", parse_methods("gaussian", get_registry()), 0.25, tmp_path, "quick",
                       Budget(**{**TINY.__dict__, "epochs": 2}), log=lambda line: None)


def test_unknown_names_list_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'sgd'; valid: .*catrs.*smoothmix"):
        parse_methods("catrs,sgd", get_registry())
    with pytest.raises(ValueError, match="unknown preset 'fast'; valid: imagenet, mnist, paper, quick"):
        run_comparison("digits", parse_methods("gaussian", get_registry()), 0.25, tmp_path, "fast")
    with pytest.raises(ValueError, match="unknown dataset 'no-such-data'; valid: .*digits"):
        run_comparison("no-such-data", parse_methods("gaussian", get_registry()), 0.25, tmp_path, "quick", TINY)


def test_command_line(tmp_path, capsys):
    code = main(["compare", "--dataset", "digits", "--methods", "stability", "--sigma", "0.5", "--preset", "quick",
                 "--output", str(tmp_path), "--epochs", "1", "--soft-samples", "5", "--N0", "20", "--N", "100",
                 "--alpha", "0.01", "--skip", "1", "--max", "6", "--train-examples", "64", "--quiet",
                 "--certify-collapsed"])
    assert code == 0
    printed = capsys.readouterr().out
    assert re.search(r"\| stability( \(collapsed\))? \| 6 \|", printed) and "summary.md" in printed
    assert main(["compare", "--help"]) == 0
    shown = capsys.readouterr().out
    assert "--N0 N0" in shown and "--train-examples TRAIN_EXAMPLES" in shown and "BUDGET_" not in shown
    assert json.loads((tmp_path / "settings.json").read_text())["budget.epochs"] == 1
    assert main(["compare", "--dataset", "digits", "--methods", "nope", "--sigma", "0.5", "--output",
                 str(tmp_path)]) == 2
    assert "unknown method 'nope'; valid:" in capsys.readouterr().err
    assert main(["compare", "--dataset", "digits", "--methods", "gaussian", "--sigma", "0.5", "--output",
                 str(tmp_path / "other"), "--certify-batch", "0"]) == 2
    assert "argument --certify-batch: must be an integer >= 1 or auto, got '0'" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_command_line_refusals_name_their_own_remedy(tmp_path, capsys):
    tiny = ["--dataset", "digits", "--methods", "gaussian", "--sigma", "0.5", "--preset", "quick", "--epochs", "1",
            "--N0", "20", "--N", "100", "--alpha", "0.01", "--max", "4", "--train-examples", "64", "--quiet",
            "--certify-collapsed"]
    if not __import__("torch").cuda.is_available():
        assert main(["compare", *tiny, "--output", str(tmp_path / "gpu"), "--devices", "cpu,cuda:0"]) == 2
        assert "--devices cuda:0: CUDA is not available on this machine" in capsys.readouterr().err
        assert not (tmp_path / "gpu").exists()
    assert main(["compare", *tiny, "--output", str(tmp_path / "run"), "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["compare", *tiny, "--output", str(tmp_path / "run"), "--device", "cpu", "--seed", "1"]) == 2
    error = capsys.readouterr().err
    assert "seed was 0, now 1" in error and "pass another --output or the same settings" in error
    assert "delete it" not in error  # deleting the folder would throw its finished runs away


def test_sequential_comparison_writes_samples_and_refuses_the_exact_procedure(tmp_path, capsys):
    tiny = ["compare", "--dataset", "digits", "--methods", "stability", "--sigma", "0.5", "--preset", "quick",
            "--output", str(tmp_path), "--epochs", "1", "--soft-samples", "5", "--N0", "20", "--N", "2000", "--alpha",
            "0.01", "--skip", "1", "--max", "6", "--train-examples", "64", "--quiet", "--certify-collapsed"]
    assert main([*tiny, "--sequential", "--radii", "0.25,0.5"]) == 0
    assert "sequential CERTIFY (radii 0, 0.25, 0.5" in capsys.readouterr().out
    lines = (tmp_path / "noise_0.5" / "certify" / "stability.tsv").read_text().splitlines()
    assert lines[0].split("\t") == ["idx", "label", "predict", "radius", "correct", "samples", "time"]
    (entry,) = json.loads((tmp_path / "noise_0.5" / "summary.json").read_text())["methods"]
    assert entry["samples_per_example"] == pytest.approx(np.mean([int(line.split("\t")[5]) for line in lines[1:]]))
    assert main(tiny) == 2
    assert "certify.sequential was True, now not set" in capsys.readouterr().err
