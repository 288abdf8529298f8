"""Checkpoints load only with weights_only=True and fail clearly on bad files."""

import pytest
import torch

from catrs_plugin.plugins.registry import get_registry
from catrs_plugin.train.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint


class Payload:
    """An arbitrary object: torch.save pickles it as code that weights_only=True must refuse."""

    def __reduce__(self):
        return (print, ("this would run on load",))


def test_round_trip_rebuilds_the_same_model(tmp_path):
    torch.manual_seed(0)
    model = get_registry().create_model("digits_cnn", "digits").eval()
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"arch": "digits_cnn", "dataset": "digits", "state_dict": model.state_dict(), "epoch": 1})
    loaded = load_checkpoint(path)
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(loaded(x), model(x))
    assert list(model.state_dict())[0] == "1.0.weight"  # Sequential(NormalizeLayer, net), like the reference


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"arch": "digits_cnn", "payload": Payload()}, path)
    with pytest.raises(ValueError, match="weights_only"):
        read_checkpoint(path)


def test_corrupt_and_missing_files(tmp_path):
    path = tmp_path / "broken.pt"
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="corrupt"):
        read_checkpoint(path)
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"epoch": 1})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:100])
    with pytest.raises(ValueError, match="corrupt"):
        read_checkpoint(truncated)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        read_checkpoint(tmp_path / "nope.pt")


def test_missing_entries_and_mismatched_keys_are_named(tmp_path):
    path = tmp_path / "partial.pt"
    save_checkpoint(path, {"arch": "digits_cnn", "state_dict": {}})
    with pytest.raises(ValueError, match="'dataset'"):
        load_checkpoint(path)
    save_checkpoint(path, {"arch": "digits_cnn", "dataset": "digits", "state_dict": {"conv.weight": torch.zeros(1)}})
    with pytest.raises(ValueError, match=r"missing keys \[1\.0\.bias"):
        load_checkpoint(path)
    save_checkpoint(path, {"arch": "no_such_net", "dataset": "digits", "state_dict": {}})
    with pytest.raises(ValueError, match="unknown architecture 'no_such_net'; valid: .*digits_cnn"):
        load_checkpoint(path)


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"epoch": 1})

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert read_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]
