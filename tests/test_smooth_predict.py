"""``catrs smooth-predict``: soft labels as an .npy, resumable, accepted by ``catrs train``."""

import pickle

import numpy as np
import pytest
import torch

from catrs_plugin.certify.smoothing import Smooth
from catrs_plugin.cli import main
from catrs_plugin.plugins.registry import get_registry
from catrs_plugin.train.checkpoint import load_checkpoint, save_checkpoint
from catrs_plugin.train.data import training_views
from catrs_plugin.train.soft_labels import smoothed_soft_labels, soft_labels_to_file
from catrs_plugin.utils import provenance


@pytest.fixture
def teacher(digits_checkpoint):
    return digits_checkpoint


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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["soft.npy", "soft.npy.config.json",
                                                           "soft.npy.provenance.json"]
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
        soft_labels_to_file(model, x, 10, 0.25, out, n=20, batch_size=200, progress=False)
    monkeypatch.undo()
    partial = tmp_path / "soft.npy.partial"
    assert partial.stat().st_size == 2 * 10 * 10 * 4 and not out.exists()  # two groups of 10 rows
    with open(partial, "ab") as handle:
        handle.write(b"\x00" * 7)  # a row cut short
    with pytest.raises(ValueError, match="other settings"):
        soft_labels_to_file(model, x, 10, 0.25, out, n=30, batch_size=200, progress=False)
    assert soft_labels_to_file(model, x, 10, 0.25, out, n=20, batch_size=200, progress=False) == 30
    np.testing.assert_array_equal(np.load(out), Smooth(model, 10, 0.25).class_frequencies(x, 20))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["soft.npy", "soft.npy.provenance.json"]


def test_existing_output_is_reused_only_by_its_own_run(teacher, tmp_path, capsys, digits):
    out = tmp_path / "soft.npy"

    def command(samples="5", *extra):
        return main(["smooth-predict", "digits", str(teacher), str(out), "--N", samples, "--split", "test",
                     "--quiet", "--device", "cpu", *extra])

    np.save(out, np.zeros((2, 10)))
    assert command() == 2  # a file nothing says was produced by this run
    error = capsys.readouterr().err
    assert "nothing records which run produced it" in error and "pass --restart" in error
    assert np.load(out).shape == (2, 10)
    assert command("5", "--restart") == 0
    assert np.load(out).shape == (len(digits[2]), 10)
    capsys.readouterr()
    stamp = out.stat().st_mtime_ns
    assert command() == 0
    assert "already holds these soft labels" in capsys.readouterr().out and out.stat().st_mtime_ns == stamp
    assert command("6") == 2
    assert "N was 5, now 6" in capsys.readouterr().err and out.stat().st_mtime_ns == stamp


def write_cifar10(root, train_per_batch=2, test=3):
    """A tiny CIFAR-10 folder in the python-batch format (random images)."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name, count in [*((f"data_batch_{i}", train_per_batch) for i in range(1, 6)), ("test_batch", test)]:
        images = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
        batch = {"labels": [int(v) for v in rng.integers(0, 10, count)], "data": images.reshape(count, -1)}
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)


def test_training_soft_labels_come_from_one_augmented_view_per_image(tmp_path, capsys):
    """As the reference's smooth_prediction.py --split train: the teacher sees one random crop and flip per image."""
    write_cifar10(tmp_path / "data")
    torch.manual_seed(0)
    teacher = get_registry().create_model("cifar_resnet20", "cifar10")
    checkpoint = tmp_path / "teacher.pt"
    save_checkpoint(checkpoint, {"arch": "cifar_resnet20", "dataset": "cifar10", "state_dict": teacher.state_dict()})
    spec = get_registry().dataset("cifar10")
    base = ["smooth-predict", "cifar10", str(checkpoint), "--N", "20", "--seed", "3", "--data-dir",
            str(tmp_path / "data"), "--device", "cpu", "--quiet"]
    assert main([*base[:3], str(tmp_path / "soft.npy"), *base[3:]]) == 0
    assert "10 x 10 soft labels of the augmented images" in capsys.readouterr().out
    soft = np.load(tmp_path / "soft.npy")
    views = training_views(spec, 3, data_dir=tmp_path / "data")
    images, _ = spec.load("train", data_dir=tmp_path / "data")
    assert not np.array_equal(views, images)
    np.testing.assert_array_equal(soft, smoothed_soft_labels(teacher.eval(), views, 10, 0.25, 20, seed=3))
    assert provenance.read_record(tmp_path / "soft.npy")["views"] == "augmented"
    assert main([*base[:3], str(tmp_path / "plain.npy"), *base[3:], "--views", "as-loaded"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "plain.npy"),
                                  smoothed_soft_labels(teacher.eval(), images, 10, 0.25, 20, seed=3))
    assert main([*base[:3], str(tmp_path / "test.npy"), *base[3:], "--split", "test", "--views", "augmented"]) == 2
    assert "--views augmented applies to the training split only" in capsys.readouterr().err
