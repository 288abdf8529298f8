"""CIFAR-10-C: certification per corruption, and the paper's mACR / mAcc from published results."""

import json

import numpy as np
import pytest
import torch

from catrs_plugin.cli import main
from catrs_plugin.cli.certify_corruptions import severity_rows
from catrs_plugin.plugins.registry import get_registry
from catrs_plugin.results.corruptions import summarize_corruptions
from catrs_plugin.results.metrics import average_certified_radius
from catrs_plugin.results.tsv import read_certify_results
from catrs_plugin.train.checkpoint import save_checkpoint

#: The published table (README of the reference results): method folder -> (mACR, mAcc in %).
PUBLISHED = {
    "cohen": (0.343, 64.4), "stab": (0.302, 60.7), "salman": (0.447, 63.7), "macer": (0.409, 68.8),
    "consistency": (0.444, 65.6), "smoothmix": (0.446, 67.7), "cat_rs": (0.475, 70.1),
}


def test_analyze_reproduces_the_published_cifar10c_table(reference_dir, capsys):
    folders = [str(reference_dir / "cifar10c" / method) for method in PUBLISHED]
    assert main(["analyze", "--corruptions", *folders, "--format", "json"]) == 0
    summaries = json.loads(capsys.readouterr().out)
    assert [s["path"] for s in summaries] == folders
    for summary, (macr, macc) in zip(summaries, PUBLISHED.values()):
        assert len(summary["corruptions"]) == 15 and all(row["n"] == 500 for row in summary["corruptions"])
        assert round(summary["mean_acr"], 3) == macr
        assert round(100 * summary["mean_accuracy"], 1) == macc
    assert main(["analyze", "--corruptions", *folders[-2:]]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["corruption", "smoothmix", "ACR", "smoothmix", "Acc", "cat_rs", "ACR", "cat_rs", "Acc"]
    assert table[-1].split()[-4:] == ["0.446", "67.7", "0.475", "70.1"]
    assert len(table) == 1 + 15 + 1


def test_per_corruption_rows_follow_the_metric_definitions(reference_dir):
    summary = summarize_corruptions(reference_dir / "cifar10c" / "cat_rs")
    fog = next(row for row in summary["corruptions"] if row["corruption"] == "fog")
    results = read_certify_results(reference_dir / "cifar10c" / "cat_rs" / "fog.tsv")
    assert fog["acr"] == average_certified_radius(results.radius, results.correct)
    assert fog["accuracy"] == np.mean(results.correct == 1)
    assert summary["mean_acr"] == pytest.approx(np.mean([row["acr"] for row in summary["corruptions"]]))


def test_analyze_needs_files_or_folders(tmp_path, capsys):
    assert main(["analyze"]) == 2
    assert "give result FILEs, --published DIR, or --corruptions DIR" in capsys.readouterr().err
    assert main(["analyze", "--corruptions", str(tmp_path)]) == 2
    assert "holds no <corruption>.tsv" in capsys.readouterr().err


def test_severity_rows_select_like_the_reference():
    assert severity_rows(50_000, [1, 2, 3, 4, 5], 100).tolist() == list(range(0, 50_000, 100))
    assert severity_rows(20, [2, 5], 3).tolist() == [6, 18]  # severity of row i: i // 4 + 1
    assert severity_rows(20, [1, 2], 1, max_index=6).tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="--severities must lie in 1..5"):
        severity_rows(20, [0], 1)


def test_certify_corruptions_end_to_end_and_resumed(tmp_path, capsys):
    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "CIFAR-10-C"
    folder.mkdir(parents=True)
    np.save(folder / "labels.npy", np.tile(rng.integers(0, 10, 4), 5).astype(np.uint8))
    for corruption in ("fog", "snow"):
        np.save(folder / f"{corruption}.npy", rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8))
    torch.manual_seed(0)
    model = get_registry().create_model("cifar_resnet20", "cifar10")
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(checkpoint, {"arch": "cifar_resnet20", "dataset": "cifar10", "state_dict": model.state_dict()})
    out = tmp_path / "out"
    command = ["certify-corruptions", str(checkpoint), "0.25", str(out), "--corruptions", "fog", "snow",
               "--severities", "1", "5", "--skip", "2", "--N0", "10", "--N", "30", "--batch", "40",
               "--data-dir", str(tmp_path / "data"), "--device", "cpu", "--quiet"]
    assert main([*command, "--max", "17"]) == 0
    assert read_certify_results(out / "fog.tsv").idx.tolist() == [0, 2, 16]
    assert main(command) == 0
    assert "fog: wrote 1 rows" in capsys.readouterr().out
    fog = read_certify_results(out / "fog.tsv")
    assert fog.idx.tolist() == [0, 2, 16, 18]
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "fog.tsv", "fog.tsv.provenance.json", "snow.tsv",
                                                     "snow.tsv.provenance.json"]
    whole = tmp_path / "whole"
    assert main([*command[:3], str(whole), *command[4:]]) == 0
    again = read_certify_results(whole / "fog.tsv")
    np.testing.assert_array_equal(again.predict, fog.predict)
    np.testing.assert_array_equal(again.radius, fog.radius)
    capsys.readouterr()
    assert main(["analyze", "--corruptions", str(out), "--format", "json"]) == 0
    summary = json.loads(capsys.readouterr().out)[0]
    assert [row["corruption"] for row in summary["corruptions"]] == ["fog", "snow"]


def test_certify_corruptions_rejects_unknown_names(tmp_path, capsys):
    assert main(["certify-corruptions", str(tmp_path / "m.pt"), "0.25", str(tmp_path), "--corruptions", "rain"]) == 2
    assert "unknown corruptions ['rain']" in capsys.readouterr().err
