"""Nothing mixed: every resumable output records what produced it and refuses another run.

The first test is the scenario of issue 13 through the command line: a result file of one
model cut short, then continued with another checkpoint, sigma, N and alpha.
"""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import torch

from catrs_plugin.certify.files import certify_to_file, predict_to_file
from catrs_plugin.cli import main
from catrs_plugin.plugins.registry import get_registry
from catrs_plugin.results.tsv import CERTIFY_HEADER, ResultWriter, format_certify_row, read_certify_results
from catrs_plugin.train.checkpoint import read_checkpoint, save_checkpoint
from catrs_plugin.train.loop import TensorData, TrainConfig, train
from catrs_plugin.utils import provenance
from catrs_plugin.utils.atomic import save_npy_atomic, write_atomic
from catrs_plugin.utils.provenance import ProvenanceError


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two digits checkpoints that differ in one weight (model A was trained for 2 epochs)."""
    folder = tmp_path_factory.mktemp("models")
    a = folder / "a.pt"
    assert main(["train", "--dataset", "digits", "--method", "gaussian", "--sigma", "0.25", "--epochs", "2",
                 "--batch", "64", "--checkpoint", str(a), "--quiet", "--device", "cpu"]) == 0
    payload = read_checkpoint(a)
    payload["state_dict"]["1.0.bias"][0] += 0.5
    b = folder / "b.pt"
    save_checkpoint(b, payload)
    return a, b


def certify(checkpoint, out, sigma="0.25", *extra):
    return main(["certify", "digits", str(checkpoint), sigma, str(out), "--N0", "20", "--N", "200", "--batch", "400",
                 "--quiet", "--device", "cpu", *extra])


def test_issue_scenario_a_cut_file_is_not_continued_with_another_model_and_settings(checkpoints, tmp_path, capsys):
    a, b = checkpoints
    mix = tmp_path / "mix.tsv"
    assert certify(a, mix, "0.25", "--max", "12") == 0
    lines = mix.read_text().splitlines(keepends=True)
    mix.write_text("".join(lines[:9]))  # the file cut to 8 rows
    before = mix.read_bytes()
    capsys.readouterr()
    assert main(["certify", "digits", str(b), "0.5", str(mix), "--N0", "20", "--N", "100", "--alpha", "0.1",
                 "--max", "14", "--quiet", "--device", "cpu"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("catrs certify: error: result file")
    for difference in ("model was sha256 ", "sigma was 0.25, now 0.5", "N was 200, now 100",
                       "alpha was 0.001, now 0.1"):
        assert difference in error
    assert "pass --restart to start afresh, or choose another output path" in error
    assert mix.read_bytes() == before  # nothing appended

    assert certify(a, mix, "0.25", "--max", "12") == 0  # the same run continues
    assert "wrote 4 rows" in capsys.readouterr().out
    assert certify(b, mix, "0.25", "--max", "12") == 2  # a finished file and another checkpoint
    error = capsys.readouterr().err
    assert "model was sha256" in error and "sigma" not in error.split("(", 1)[1]
    assert certify(b, mix, "0.25", "--max", "12", "--restart") == 0
    assert "wrote 12 rows" in capsys.readouterr().out
    assert provenance.read_record(mix)["model"] == provenance.weights_digest(read_checkpoint(b)["state_dict"])


def test_a_result_file_without_its_record_is_not_continued(checkpoints, tmp_path, capsys):
    out = tmp_path / "out.tsv"
    assert certify(checkpoints[0], out, "0.25", "--max", "3") == 0
    provenance.sidecar(out).unlink()
    assert certify(checkpoints[0], out, "0.25", "--max", "3") == 2
    assert "nothing records which run produced it" in capsys.readouterr().err
    out.write_text("idx\tlabel\tpredict\tradius\tcorrect\ttime\n")  # another tool's file, no record either
    assert certify(checkpoints[0], out, "0.25", "--max", "3") == 2


def test_the_selection_may_grow_but_not_leave_rows_out(checkpoints, tmp_path, capsys):
    """Every row depends on its own example only, so a continued file must equal a fresh run of the new selection."""
    grown, fresh = tmp_path / "grown.tsv", tmp_path / "fresh.tsv"
    assert certify(checkpoints[0], grown, "0.25", "--max", "4") == 0
    assert certify(checkpoints[0], grown, "0.25", "--max", "8") == 0
    assert certify(checkpoints[0], fresh, "0.25", "--max", "8") == 0
    a, b = read_certify_results(grown), read_certify_results(fresh)
    assert a.idx.tolist() == b.idx.tolist() == list(range(8))
    np.testing.assert_array_equal(a.radius, b.radius)
    assert provenance.read_record(grown) == provenance.read_record(fresh)
    capsys.readouterr()
    assert certify(checkpoints[0], grown, "0.25", "--max", "8", "--skip", "2") == 2
    error = capsys.readouterr().err
    assert "holds rows of 4 examples this run does not select (first: [1, 3, 5, 7])" in error


def test_predict_rows_record_their_run(checkpoints, tmp_path, capsys):
    out = tmp_path / "p.tsv"
    command = ["predict", "digits", str(checkpoints[0]), "0.25", str(out), "--N", "100", "--max", "3", "--quiet",
               "--device", "cpu"]
    assert main(command) == 0
    assert provenance.read_record(out)["command"] == "predict"
    capsys.readouterr()
    assert main([*command, "--alpha", "0.01"]) == 2
    assert "alpha was 0.001, now 0.01" in capsys.readouterr().err


def test_python_api_records_model_data_and_precision(linear_two_class, tmp_path):
    model = linear_two_class(torch.tensor([1.0, -1.0]), 0.0)
    x = np.random.default_rng(0).random((6, 2)).astype(np.float32)
    y = (x[:, 0] > x[:, 1]).astype(np.int64)
    out = tmp_path / "r.tsv"
    certify_to_file(model, 2, 0.5, x, y, out, n0=10, n=50, progress=False)
    record = provenance.read_record(out)
    assert record["data"] == provenance.digest(x, y) and record["precision"] == "fp32"
    with pytest.raises(ProvenanceError, match="data was sha256"):
        certify_to_file(model, 2, 0.5, x[::-1].copy(), y[::-1].copy(), out, n0=10, n=50, progress=False)
    with pytest.raises(ProvenanceError, match="seed was 0, now 1"):
        certify_to_file(model, 2, 0.5, x, y, out, n0=10, n=50, seed=1, progress=False)
    with pytest.raises(ProvenanceError, match="precision was 'fp32', now 'bfloat16'"):
        certify_to_file(model, 2, 0.5, x, y, out, n0=10, n=50, autocast_dtype=torch.bfloat16, progress=False)
    with pytest.raises(ProvenanceError, match="command was 'certify', now 'predict'"):
        predict_to_file(model, 2, 0.5, x, y, out, n=50, progress=False)
    assert certify_to_file(model, 2, 0.5, x, y, out, n0=10, n=50, seed=1, resume=False, progress=False) == 6


def test_train_resumes_only_its_own_checkpoint_and_says_so(tmp_path, capsys):
    path = tmp_path / "c.pt"
    base = ["train", "--dataset", "digits", "--method", "gaussian", "--sigma", "0.25", "--batch", "256",
            "--checkpoint", str(path), "--quiet", "--device", "cpu"]
    assert main([*base, "--epochs", "1"]) == 0
    capsys.readouterr()
    assert main([*base, "--epochs", "2"]) == 0
    assert f"{path}: resuming from epoch 1 of 2" in capsys.readouterr().out
    assert main([*base, "--epochs", "2", "--lr", "0.05"]) == 2
    error = capsys.readouterr().err
    assert "checkpoint" in error and "lr was 0.1, now 0.05" in error and "pass --restart" in error
    assert main([*base, "--epochs", "1", "--lr", "0.05", "--restart"]) == 0
    assert read_checkpoint(path)["provenance"]["lr"] == 0.05


def test_a_checkpoint_without_a_record_or_of_other_hyperparameters_is_refused(digits, tmp_path):
    x, y = digits[0][:64], digits[1][:64]
    method = get_registry().method("stability")

    def run(epochs, **hp):
        torch.manual_seed(0)
        model = get_registry().create_model("digits_cnn", "digits")
        config = TrainConfig(epochs=epochs, batch_size=64, checkpoint=str(path), progress=False)
        return train(model, method, method.hyperparameters(**hp), 0.25, TensorData(x, y), config)

    path = tmp_path / "s.pt"
    run(1)
    with pytest.raises(ProvenanceError, match=r"hyperparameters.lbd was 2.0, now 1.0"):
        run(2, lbd=1.0)
    with pytest.raises(ProvenanceError, match=r"data was sha256"):
        torch.manual_seed(0)
        train(get_registry().create_model("digits_cnn", "digits"), method, method.hyperparameters(), 0.25,
              TensorData(x[::-1].copy(), y[::-1].copy()),
              TrainConfig(epochs=2, batch_size=64, checkpoint=str(path), progress=False))
    payload = read_checkpoint(path)
    del payload["provenance"]
    save_checkpoint(path, payload)
    with pytest.raises(ProvenanceError, match="nothing records which run produced it"):
        run(2)


def test_corruption_results_record_their_run(tmp_path, capsys):
    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "CIFAR-10-C"
    folder.mkdir(parents=True)
    np.save(folder / "labels.npy", np.tile(rng.integers(0, 10, 2), 5).astype(np.uint8))
    np.save(folder / "fog.npy", rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8))
    torch.manual_seed(0)
    model = get_registry().create_model("cifar_resnet20", "cifar10")
    checkpoint = tmp_path / "model.pt"
    save_checkpoint(checkpoint, {"arch": "cifar_resnet20", "dataset": "cifar10", "state_dict": model.state_dict()})
    out = tmp_path / "out"

    def run(*extra):
        return main(["certify-corruptions", str(checkpoint), "0.25", str(out), "--corruptions", "fog", "--skip", "5",
                     "--N0", "10", "--N", "20", "--batch", "40", "--data-dir", str(tmp_path / "data"),
                     "--device", "cpu", "--quiet", *extra])

    assert run() == 0
    record = provenance.read_record(out / "fog.tsv")
    assert (record["dataset"], record["split"], record["N"]) == ("cifar10c", "fog", 20)
    assert run("--seed", "3") == 2
    assert "seed was 0, now 3" in capsys.readouterr().err


def test_comparison_folder_and_its_cached_soft_labels(tmp_path):
    from catrs_plugin.compare.summary import check_settings
    from catrs_plugin.plugins.registry import get_registry
    from catrs_plugin.train.data import training_soft_labels, training_soft_labels_to_file

    check_settings(tmp_path, {"dataset": "digits", "seed": 0})
    with pytest.raises(ProvenanceError, match=r"comparison folder .* \(seed was 0, now 1\).*another --output"):
        check_settings(tmp_path, {"dataset": "digits", "seed": 1})

    spec = get_registry().dataset("digits")
    torch.manual_seed(0)
    teacher = get_registry().create_model("digits_cnn", "digits").eval()
    path = tmp_path / "teacher" / "soft_labels.npy"
    path.parent.mkdir()
    assert training_soft_labels_to_file(teacher, spec, 0.25, 20, path, seed=1) == 1438
    np.testing.assert_array_equal(np.load(path), training_soft_labels(teacher, spec, 0.25, 20, seed=1))
    assert training_soft_labels_to_file(teacher, spec, 0.25, 20, path, seed=1) == 0  # reused
    with pytest.raises(ProvenanceError, match=r"seed was 1, now 2"):
        training_soft_labels_to_file(teacher, spec, 0.25, 20, path, seed=2)


def test_whole_files_are_reused_only_with_their_record(tmp_path):
    path = tmp_path / "soft.npy"
    settings = {"model": "a" * 64, "N": 10}
    assert not provenance.reuse(path, settings)
    provenance.save(path, settings, lambda p: save_npy_atomic(p, np.zeros(3)))
    assert provenance.reuse(path, settings)
    with pytest.raises(ProvenanceError, match=r"N was 10, now 20"):
        provenance.reuse(path, {**settings, "N": 20})

    def crash(target):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # a run killed while replacing the file ...
        provenance.save(path, {**settings, "N": 20}, crash)
    with pytest.raises(ProvenanceError, match="nothing records"):  # ... never leaves it with a wrong record
        provenance.reuse(path, settings)
    provenance.sidecar(path).write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"provenance record '.*soft.npy.provenance.json' is not a JSON object"):
        provenance.read_record(path)


def test_digests_identify_content_not_containers():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert provenance.digest(a) == provenance.digest(torch.from_numpy(a)) == provenance.digest(a.copy(order="F"))
    assert provenance.digest(a) != provenance.digest(a.astype(np.float64))
    assert provenance.digest(a) != provenance.digest(a.reshape(4, 3))
    assert provenance.digest(a, None) != provenance.digest(a)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    digest = provenance.weights_digest(net)
    assert provenance.weights_digest(torch.nn.DataParallel(net)) == digest
    assert provenance.weights_digest({f"module.{k}": v for k, v in net.state_dict().items()}) == digest
    with torch.no_grad():
        net[0].weight[0, 0] += 1e-6
    assert provenance.weights_digest(net) != digest
    assert provenance.architecture_digest(net) == provenance.architecture_digest(torch.nn.DataParallel(net))


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_every_file_we_write_follows_the_umask_like_open(tmp_path, umask, linear_two_class):
    previous = os.umask(umask)
    try:
        expected = 0o666 & ~umask
        with open(tmp_path / "plain.txt", "w"):
            pass
        save_checkpoint(tmp_path / "c.pt", {"epoch": 1})
        save_npy_atomic(tmp_path / "a.npy", np.zeros(2))
        write_atomic(tmp_path / "s.json", "{}")
        with ResultWriter(tmp_path / "r.tsv", {"model": "m"}) as writer:
            writer.write(format_certify_row(0, 1, 1, 0.5, 1.0))
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
        assert modes == {name: expected for name in
                         ("plain.txt", "c.pt", "a.npy", "s.json", "r.tsv", "r.tsv.provenance.json")}
        os.chmod(tmp_path / "c.pt", 0o640)  # a replaced file keeps its mode, as with open(path, "w")
        save_checkpoint(tmp_path / "c.pt", {"epoch": 2})
        assert stat.S_IMODE((tmp_path / "c.pt").stat().st_mode) == 0o640
    finally:
        os.umask(previous)


def test_record_is_json_next_to_an_unchanged_cohen_file(checkpoints, tmp_path):
    out = tmp_path / "o.tsv"
    assert certify(checkpoints[0], out, "0.25", "--max", "2") == 0
    assert out.read_text().splitlines()[0] == "\t".join(CERTIFY_HEADER)
    record = json.loads(provenance.sidecar(out).read_text())
    assert {"command", "model", "data", "indices", "sigma", "N0", "N", "alpha", "seed", "precision", "dataset",
            "split"} <= set(record)
    assert record["indices"].startswith("2 examples, indices 0 to 1")
