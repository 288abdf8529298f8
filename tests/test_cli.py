"""The ``catrs`` command: train, certify, predict end to end, resuming, and argument errors."""

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from catrs_plugin.certify.fast_inference import compilation_messages_on_stderr
from catrs_plugin.cli import main
from catrs_plugin.results.tsv import read_certify_results


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "gaussian.pt"
    assert main(["train", "--dataset", "digits", "--method", "gaussian", "--sigma", "0.25", "--epochs", "3",
                 "--batch", "64", "--checkpoint", str(path), "--quiet", "--device", "cpu"]) == 0
    return path


def _certify(checkpoint, out, *extra):
    return main(["certify", "digits", str(checkpoint), "0.25", str(out), "--N0", "50", "--N", "500",
                 "--batch", "400", "--quiet", "--device", "cpu", *extra])


def test_certify_resumes_after_the_last_complete_row(checkpoint, tmp_path):
    whole, part = tmp_path / "whole.tsv", tmp_path / "part.tsv"
    assert _certify(checkpoint, whole, "--max", "12", "--skip", "2") == 0
    assert _certify(checkpoint, part, "--max", "6", "--skip", "2") == 0
    with open(part, "a") as handle:
        handle.write("6\t4\t")  # a row cut short by a crash
    assert _certify(checkpoint, part, "--max", "12", "--skip", "2") == 0
    a, b = read_certify_results(whole), read_certify_results(part)
    assert list(a.idx) == list(b.idx) == [0, 2, 4, 6, 8, 10]
    for column in ("label", "predict", "radius", "correct"):
        np.testing.assert_array_equal(getattr(a, column), getattr(b, column))
    assert a.correct.mean() > 0.5


def test_a_command_prints_the_epoch_lines_and_leaves_the_sessions_logging_as_it_was(tmp_path, capsys):
    package, compilation = logging.getLogger("catrs_plugin"), logging.getLogger("catrs_plugin.certify.fast_inference")
    before = [(log.handlers[:], log.level, log.propagate) for log in (package, compilation)]
    assert main(["train", "--dataset", "digits", "--method", "gaussian", "--sigma", "0.25", "--epochs", "1",
                 "--batch", "64", "--checkpoint", str(tmp_path / "g.pt"), "--quiet", "--device", "cpu"]) == 0
    assert "gaussian sigma=0.25 epoch 1/1: loss" in capsys.readouterr().out
    with compilation_messages_on_stderr():  # what certify --compile and --fast enter
        compilation.info("compiled in 1 s")
        assert compilation.propagate is False
    assert "compiled in 1 s" in capsys.readouterr().err
    assert [(log.handlers, log.level, log.propagate) for log in (package, compilation)] == before
    logging.getLogger("catrs_plugin.train.loop").info("a library message after the command")
    assert capsys.readouterr().out == ""


def test_predict_writes_cohen_predict_rows(checkpoint, tmp_path):
    out = tmp_path / "predict.tsv"
    assert main(["predict", "digits", str(checkpoint), "0.25", str(out), "--N", "300", "--max", "5",
                 "--quiet", "--device", "cpu"]) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == "idx\tlabel\tpredict\tcorrect\ttime"
    assert [line.split("\t")[0] for line in lines[1:]] == ["0", "1", "2", "3", "4"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["--N0", "0"], "argument --N0: must be an integer >= 1"),
        (["--N", "0"], "argument --N: must be an integer >= 1"),
        (["--alpha", "1.5"], "alpha must lie in the open interval (0, 1)"),
        (["--batch", "0"], "argument --batch: must be an integer >= 1 or auto, got '0'"),
        (["--skip", "0"], "argument --skip: must be an integer >= 1"),
        (["--split", "validation"], "--split must be one of train, test"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(checkpoint, tmp_path, capsys, args, message):
    assert _certify(checkpoint, tmp_path / "x.tsv", *args) == 2
    assert message in capsys.readouterr().err


def test_bad_sigma_dataset_and_checkpoint(checkpoint, tmp_path, capsys):
    assert main(["certify", "digits", str(checkpoint), "0", str(tmp_path / "x.tsv")]) == 2
    assert "sigma must be a finite number > 0" in capsys.readouterr().err
    assert main(["certify", "cifar1000", str(checkpoint), "0.25", str(tmp_path / "x.tsv")]) == 2
    assert "unknown dataset 'cifar1000'; valid:" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    bad.write_text("garbage")
    assert main(["certify", "digits", str(bad), "0.25", str(tmp_path / "x.tsv")]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_train_catrs_needs_soft_labels_of_the_right_shape(tmp_path, capsys):
    base = ["train", "--dataset", "digits", "--method", "catrs", "--sigma", "0.25", "--epochs", "1",
            "--checkpoint", str(tmp_path / "c.pt"), "--quiet"]
    assert main(base) == 2
    assert "--soft-labels" in capsys.readouterr().err
    soft = tmp_path / "soft.npy"
    np.save(soft, np.full((10, 10), 0.1, np.float32))
    assert main([*base, "--soft-labels", str(soft)]) == 2
    assert "must have shape" in capsys.readouterr().err
    assert main([*base, "--method", "nope"]) == 2
    assert "unknown method 'nope'; valid:" in capsys.readouterr().err
    assert main([*base, "--hp", "lambda=3"]) == 2
    assert "no hyper-parameter 'lambda'" in capsys.readouterr().err


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "catrs_plugin.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("train", "certify", "predict", "analyze", "demo"):
        assert command in result.stdout


def test_demo_runs_end_to_end_and_reuses_finished_steps(tmp_path, capsys):
    arguments = ["demo", "--output", str(tmp_path), "--epochs", "2", "--soft-samples", "50", "--N0", "20",
                 "--N", "200", "--device", "cpu"]
    assert main(arguments) == 0
    captured = capsys.readouterr()
    table = captured.out
    assert "| gaussian | 359 |" in table and "| catrs | 359 |" in table
    # one line per epoch, and each result as soon as it is known: the teacher's accuracy before CAT-RS trains
    lines = table.splitlines()
    epochs = [line for line in lines if " epoch " in line and "train accuracy" in line]
    assert [line.split(":")[0] for line in epochs] == [f"{name} sigma=0.25 epoch {e}/2"
                                                       for name in ("gaussian", "catrs") for e in (1, 2)]
    position = {key: next(i for i, line in enumerate(lines) if line.startswith(key))
                for key in ("[accuracy] gaussian_0.25", "[train] catrs_0.25", "[accuracy] catrs_0.25",
                            "[certified] gaussian", "[certified] catrs", "| gaussian |")}
    assert list(position.values()) == sorted(position.values()), position
    for label in ("gaussian sigma=0.25", "epoch 1/2", "soft labels", "certify gaussian", "certify catrs"):
        assert f"{label}: " in captured.err, label  # every bar is labelled
    for name in ("gaussian", "catrs"):
        results = read_certify_results(tmp_path / f"{name}_noise_0.25.tsv")
        assert len(results) == 359 and results.correct.sum() > 0
    assert (tmp_path / "certified_accuracy_noise_0.25.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    soft = np.load(tmp_path / "soft_labels.npy")
    assert soft.shape == (1438, 10)
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.*") if p.suffix in (".pt", ".tsv", ".npy")}
    assert main(arguments) == 0  # everything is finished: nothing is trained, sampled or certified again
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.*") if p.suffix in (".pt", ".tsv", ".npy")} == stamps
    again = capsys.readouterr()
    assert again.err == "", "a rerun with nothing to do prints no progress bar"
    assert "[train]" not in again.out and "[soft labels]" not in again.out
    assert "| catrs | 359 |" in again.out and "[certified] catrs" in again.out  # the results, read back


LIGHT_START = """
import sys
from catrs_plugin.cli import main
released = "tests/data/catrs-official-certify/cifar10/cat-rs/noise_0.25.tsv"
for argv in (["--help"], ["train", "--help"], ["analyze", released]):
    assert main(argv) == 0, argv
    assert "torch" not in sys.modules, (argv, "imported torch")
import catrs_plugin
from catrs_plugin import Smooth, train
assert train.__module__ == "catrs_plugin.train.loop" and catrs_plugin.train is train, train
print("ok")
"""


def test_help_and_analyze_do_not_import_torch():
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", LIGHT_START], capture_output=True, text=True, cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == "ok"


def test_the_parser_offers_what_the_core_accepts():
    from catrs_plugin.cli.compare import PRESETS
    from catrs_plugin.compare.plan import BUDGETS
    from catrs_plugin.train.loop import AMP_DTYPES
    from catrs_plugin.utils.defaults import AMP_NAMES

    assert tuple(AMP_DTYPES) == AMP_NAMES
    assert set(PRESETS) == set(BUDGETS)
