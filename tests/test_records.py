"""What a training run shows and keeps: accuracy on the training batches, one log line per epoch, bars only
for work to do, metrics files beside the checkpoint (consistent after resuming) and TensorBoard scalars."""

import csv
import logging
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from catrs_plugin.methods.base import Method, TrainBatch
from catrs_plugin.plugins.registry import get_registry
from catrs_plugin.train.loop import TensorData, TrainConfig, train
from catrs_plugin.train.records import metrics_paths, read_metrics


def _clean_loss(model, batch):
    """Cross-entropy on the clean inputs, observing them: with lr 0 the model never changes."""
    logits = model(batch.inputs)
    batch.observe(logits)
    return F.cross_entropy(logits, batch.targets)


OBSERVING = Method(name="clean", paper="-", loss=_clean_loss, defaults={})
SILENT = Method(name="silent", paper="-", loss=lambda model, batch: F.cross_entropy(model(batch.inputs), batch.targets),
                defaults={})


def _model():
    torch.manual_seed(0)
    return get_registry().create_model("digits_cnn", "digits")


def _train(digits, epochs, checkpoint=None, method=None, **config):
    x, y = digits[0][:192], digits[1][:192]
    method = method or get_registry().method("gaussian")
    settings = {"epochs": epochs, "batch_size": 64, "lr": 0.05, "lr_step_size": 2, "checkpoint": checkpoint,
                "progress": False, **config}
    return train(_model(), method, {}, 0.25, TensorData(x, y), TrainConfig(**settings),
                 checkpoint_fields={"arch": "digits_cnn", "dataset": "digits"})


def test_observe_counts_each_noisy_copy_against_its_target():
    targets = torch.tensor([0, 1, 2])
    batch = TrainBatch(torch.zeros(3, 1), targets, None, 0.25, torch.Generator())
    logits = torch.zeros(2, 3, 4)  # M = 2 copies of 3 examples
    logits[0, [0, 1, 2], [0, 1, 3]] = 1  # copy 0: right, right, wrong
    logits[1, [0, 1, 2], [3, 1, 2]] = 1  # copy 1: wrong, right, right
    batch.observe(logits)
    batch.observe(logits[0])
    assert (int(batch.correct), batch.observed) == (4 + 2, 6 + 3)


def test_training_accuracy_is_that_of_the_batches_the_loss_saw(digits):
    history = _train(digits, 2, method=OBSERVING, lr=0.0, weight_decay=0.0)
    with torch.no_grad():
        model = _model().eval()  # lr 0: the weights at the start are the weights throughout
        expected = (model(torch.from_numpy(digits[0][:192])).argmax(1).numpy() == digits[1][:192]).mean()
    assert [entry["accuracy"] for entry in history] == pytest.approx([expected, expected], abs=1e-12)
    assert [entry["accuracy"] for entry in _train(digits, 1, method=SILENT)] == [None]


def test_one_log_line_per_epoch(digits, caplog):
    with caplog.at_level(logging.INFO, logger="catrs_plugin.train.loop"):
        history = _train(digits, 2)
    lines = [record.getMessage() for record in caplog.records if " epoch " in record.getMessage()]
    assert len(lines) == 2
    first = history[0]
    assert lines[0] == (f"gaussian sigma=0.25 epoch 1/2: loss {first['loss']:.4f}, train accuracy "
                        f"{100 * first['accuracy']:.1f} %, lr 0.05, {first['seconds']:.3g} s")


def test_bars_only_for_work_to_do(digits, tmp_path, capsys):
    path = str(tmp_path / "c.pt")
    _train(digits, 1, path, progress=True)
    shown = capsys.readouterr().err
    assert "gaussian sigma=0.25: " in shown and "epoch 1/1: " in shown
    _train(digits, 1, path, progress=True)
    assert capsys.readouterr().err == ""


def _csv_rows(checkpoint):
    with open(metrics_paths(checkpoint)[0]) as handle:
        return list(csv.DictReader(handle))


def test_metrics_files_follow_the_checkpoint_through_a_resume(digits, tmp_path):
    whole = _train(digits, 3, str(tmp_path / "whole.pt"))
    path = tmp_path / "part.pt"
    _train(digits, 1, str(path))
    csv_path, json_path = metrics_paths(path)
    assert (csv_path.name, json_path.name) == ("part.pt.metrics.csv", "part.pt.metrics.json")
    csv_path.write_text("epoch,loss\n9,9\n")  # as if a run were killed after its checkpoint, before its metrics
    json_path.unlink()
    resumed = _train(digits, 3, str(path))
    rows = _csv_rows(path)
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]
    for row, entry, alone in zip(rows, resumed, whole):
        assert [float(row[key]) for key in ("loss", "accuracy", "lr")] == [entry[key] for key in ("loss", "accuracy",
                                                                                                  "lr")]
        assert {key: entry[key] for key in ("loss", "accuracy", "lr")} == {key: alone[key] for key in
                                                                             ("loss", "accuracy", "lr")}
    assert read_metrics(path) == [{key: entry[key] for key in ("epoch", "loss", "accuracy", "lr", "seconds")}
                                  for entry in resumed]


def test_a_method_without_accuracy_leaves_its_cells_empty(digits, tmp_path):
    _train(digits, 1, str(tmp_path / "c.pt"), method=SILENT)
    assert _csv_rows(tmp_path / "c.pt")[0]["accuracy"] == ""
    assert read_metrics(tmp_path / "c.pt")[0]["accuracy"] is None


def test_tensorboard_without_the_package_is_a_clear_error(digits, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(ValueError, match=r"needs the tensorboard package: pip install 'catrs-plugin\[tensorboard\]'"):
        _train(digits, 1, tensorboard=str(tmp_path / "tb"))


def test_tensorboard_scalars_per_epoch_and_after_resuming(digits, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board, path = tmp_path / "tb", str(tmp_path / "c.pt")
    _train(digits, 2, path, tensorboard=str(board))
    history = _train(digits, 3, path, tensorboard=str(board))
    events = EventAccumulator(str(board))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"train/loss", "train/accuracy", "train/lr", "train/seconds"}
    losses = events.Scalars("train/loss")
    assert [event.step for event in losses] == [1, 2, 3]
    assert np.allclose([event.value for event in losses], [entry["loss"] for entry in history])
