"""``catrs smooth-predict``: soft labels as an .npy, resumable, accepted by ``catrs train``."""

import numpy as np
import pytest
import torch

from catrs_plugin.checkpoint import load_checkpoint, save_checkpoint
from catrs_plugin.cli import main
from catrs_plugin.cli.smooth_predict import smoothed_predictions_to_file
from catrs_plugin.registry import get_registry
from catrs_plugin.smoothing import Smooth
from catrs_plugin.soft_labels import smoothed_soft_labels


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    torch.manual_seed(0)
    model = get_registry().create_model("digits_cnn", "digits")
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_checkpoint(path, {"arch": "digits_cnn", "dataset": "digits", "state_dict": model.state_dict()})
    return path


def test_writes_the_smoothed_predictions_of_the_training_set(teacher, tmp_path, digits):
    out = tmp_path / "soft.npy"
    assert main(["smooth-predict", "digits", str(teacher), str(out), "--N", "20", "--batch", "1000",
                 "--device", "cpu", "--quiet"]) == 0
    soft = np.load(out)
    x_train = digits[0]
    assert soft.shape == (len(x_train), 10) and soft.dtype == np.float32
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, rtol=0, atol=1e-6)
    expected = smoothed_soft_labels(load_checkpoint(teacher), x_train[:30], 10, sigma=0.25, n=20, batch_size=300)
    np.testing.assert_array_equal(soft[:30], expected)  # same noise per example, whatever the batch size
    assert sorted(p.name for p in tmp_path.iterdir()) == ["soft.npy"]
    assert main(["train", "--dataset", "digits", "--method", "catrs", "--sigma", "0.25", "--epochs", "1",
                 "--batch", "512", "--soft-labels", str(out), "--checkpoint", str(tmp_path / "catrs.pt"),
                 "--device", "cpu", "--quiet"]) == 0


def test_an_interrupted_run_continues_with_the_same_numbers(teacher, tmp_path, digits, monkeypatch):
    model, x = load_checkpoint(teacher), digits[2][:50]
    out = tmp_path / "soft.npy"
    original = Smooth.class_frequencies
    calls = []

    def crash_on_third_call(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Smooth, "class_frequencies", crash_on_third_call)
    with pytest.raises(KeyboardInterrupt):
        smoothed_predictions_to_file(model, x, 10, 0.25, out, n=20, batch_size=200, progress=False)
    monkeypatch.undo()
    partial = tmp_path / "soft.npy.partial"
    assert partial.stat().st_size == 2 * 10 * 10 * 4 and not out.exists()  # two groups of 10 rows
    with open(partial, "ab") as handle:
        handle.write(b"\x00" * 7)  # a row cut short
    with pytest.raises(ValueError, match="other settings"):
        smoothed_predictions_to_file(model, x, 10, 0.25, out, n=30, batch_size=200, progress=False)
    assert smoothed_predictions_to_file(model, x, 10, 0.25, out, n=20, batch_size=200, progress=False) == 30
    np.testing.assert_array_equal(np.load(out), Smooth(model, 10, 0.25).class_frequencies(x, 20))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["soft.npy"]


def test_existing_output_is_kept_unless_restarted(teacher, tmp_path, capsys, digits):
    out = tmp_path / "soft.npy"
    np.save(out, np.zeros((2, 10)))
    assert main(["smooth-predict", "digits", str(teacher), str(out), "--N", "5", "--quiet", "--device", "cpu"]) == 0
    assert "already exists" in capsys.readouterr().out and np.load(out).shape == (2, 10)
    assert main(["smooth-predict", "digits", str(teacher), str(out), "--N", "5", "--split", "test", "--restart",
                 "--quiet", "--device", "cpu"]) == 0
    assert np.load(out).shape == (len(digits[2]), 10)
