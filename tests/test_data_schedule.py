"""Methods' data schedules in the training loop: resume, soft labels, file-based data, checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from catrs_plugin.methods.base import DataSchedule, Method
from catrs_plugin.plugins.registry import get_registry
from catrs_plugin.train.checkpoint import read_checkpoint, save_checkpoint
from catrs_plugin.train.data import SeededDataset, loader_of
from catrs_plugin.train.data_schedule import scheduled_order
from catrs_plugin.train.loop import LoaderData, TensorData, TrainConfig, train

#: sun2025 scaled down: discards after one epoch, reweights every epoch, attacks with one step.
TINY = {"discard_epoch": 1, "discard_threshold": 0.3, "discard_samples": 20, "reweight_every": 1,
        "reweight_samples": 16, "attack_steps": 1}


def _sun2025(digits, epochs, checkpoint):
    registry = get_registry()
    method = registry.method("sun2025")
    torch.manual_seed(0)
    model = registry.create_model("digits_cnn", "digits")
    config = TrainConfig(epochs=epochs, batch_size=64, lr=0.05, lr_step_size=10, checkpoint=str(checkpoint),
                         progress=False)
    train(model, method, method.hyperparameters(**TINY), 0.25, TensorData(digits[0][:256], digits[1][:256]), config)
    return model, read_checkpoint(checkpoint)["data_schedule"]


def test_resume_after_discarding_and_reweighting_gives_the_uninterrupted_run(digits, tmp_path):
    full, schedule = _sun2025(digits, 4, tmp_path / "full.pt")
    assert 0 < len(schedule["indices"]) < 256 and schedule["draws"] == 256
    assert len(np.unique(schedule["weights"].numpy())) > 1
    _, halfway = _sun2025(digits, 2, tmp_path / "part.pt")  # epoch 1 discarded and reweighted
    assert len(halfway["indices"]) < 256
    forgetful = read_checkpoint(tmp_path / "part.pt")
    resumed, resumed_schedule = _sun2025(digits, 4, tmp_path / "part.pt")
    for key, value in full.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key
    assert torch.equal(resumed_schedule["indices"], schedule["indices"])
    assert torch.equal(resumed_schedule["weights"], schedule["weights"])

    # Negative control: a checkpoint without its schedule resumes on every example, to other weights.
    damaged = dict(forgetful)
    del forgetful["data_schedule"]
    save_checkpoint(tmp_path / "forgetful.pt", forgetful)
    other, other_schedule = _sun2025(digits, 4, tmp_path / "forgetful.pt")
    assert len(other_schedule["indices"]) == 256
    assert any(not torch.equal(v, other.state_dict()[k]) for k, v in full.state_dict().items())

    # A damaged schedule is refused with the checkpoint's name.
    for entry, message in (("indices", r"must be a dict with the tensors 'indices'"),
                           (torch.tensor([0, 300]), r"lie in \[0, 256\)")):
        bad = {**damaged["data_schedule"], "indices": entry} if isinstance(entry, torch.Tensor) else entry
        save_checkpoint(tmp_path / "damaged.pt", {**damaged, "data_schedule": bad})
        with pytest.raises(ValueError, match=f"data schedule saved in checkpoint .*damaged.pt.*{message}"):
            _sun2025(digits, 4, tmp_path / "damaged.pt")


def _probe(seen):
    """A third-party method whose schedule takes the even examples, weighted, 30 draws per epoch."""

    def schedule(view, current, **hyperparameters):
        kept = np.arange(0, view.size, 2)
        return DataSchedule(kept, np.linspace(1.0, 3.0, len(kept)), draws=30)

    def loss(model, batch):
        seen.append((batch.epoch, batch.inputs.flatten(1)[:, 0].clone(), batch.soft_labels[:, 0].clone()))
        return F.cross_entropy(model(batch.inputs), batch.targets)

    return Method("probe", "-", loss, {}, needs_soft_labels=True, schedule=schedule)


class Examples(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        return self.x[index], self.y[index]


def test_soft_labels_and_file_based_data_follow_the_schedule():
    n = 40
    x = np.repeat((np.arange(n) / 100).astype(np.float32), 4).reshape(n, 1, 2, 2)  # every pixel names its example
    y = np.arange(n) % 3
    soft = np.zeros((n, 3), np.float32)
    soft[:, 0] = np.arange(n) / 100
    config = TrainConfig(epochs=2, batch_size=8, lr=0.01, lr_step_size=10, progress=False)
    orders = []
    for data in (TensorData(x, y, soft), LoaderData(loader_of(SeededDataset(Examples(x, y), soft), 8, shuffle=True,
                                                              workers=0, pin_memory=False))):
        seen = []
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        train(model, _probe(seen), {}, 0.25, data, config)
        for _, inputs, labels in seen:
            assert torch.equal(inputs, labels)  # each soft label travels with its example
        order = [[round(float(v) * 100) for e, inputs, _ in seen if e == epoch for v in inputs] for epoch in (0, 1)]
        assert all(len(o) == 30 and all(i % 2 == 0 for i in o) for o in order)
        kept = np.arange(0, n, 2)
        schedule = DataSchedule(kept, np.linspace(1.0, 3.0, len(kept)), draws=30)
        assert order == [scheduled_order(schedule, 0, epoch).tolist() for epoch in (0, 1)]
        orders.append(order)
    assert orders[0] == orders[1]  # in memory and from a loader: the same examples


@pytest.mark.parametrize("schedule, message", [
    (DataSchedule(np.array([], np.int64)), "non-empty"),
    (DataSchedule(np.array([0, 40])), r"lie in \[0, 40\)"),
    (DataSchedule(np.array([1, 1])), "distinct"),
    (DataSchedule(np.array([1, 2]), np.array([1.0, 0.0]), 5), "weights must be finite, > 0"),
    (DataSchedule(np.array([1, 2]), np.array([1.0, 2.0])), "draws must be an integer >= 1"),
])
def test_a_bad_schedule_is_a_clear_error(schedule, message):
    method = Method("bad", "-", lambda model, batch: model(batch.inputs).sum(), {},
                    schedule=lambda view, current: schedule)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    data = TensorData(np.zeros((40, 1, 2, 2), np.float32), np.zeros(40))
    with pytest.raises(ValueError, match=f"data schedule of method 'bad' for epoch 1: .*{message}"):
        train(model, method, {}, 0.25, data, TrainConfig(epochs=1, batch_size=8, progress=False))


def test_a_loader_without_the_epoch_batch_sampler_cannot_follow_a_schedule():
    method = Method("probe", "-", lambda model, batch: model(batch.inputs).sum(), {},
                    schedule=lambda view, current: DataSchedule(np.arange(4)))
    loader = torch.utils.data.DataLoader(Examples(np.zeros((8, 1, 2, 2), np.float32), np.zeros(8, np.int64)),
                                         batch_size=4)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    with pytest.raises(ValueError, match=r"needs in-memory training data \(TensorData\) or a loader from .*loader_of"):
        train(model, method, {}, 0.25, LoaderData(loader), TrainConfig(epochs=1, progress=False))


def test_the_compare_runner_trains_a_scheduled_method_and_resumes_it(tmp_path, monkeypatch):
    from catrs_plugin.compare import Budget, parse_methods, run_comparison
    from catrs_plugin.methods.sun2025 import SUN2025

    for key, value in TINY.items():  # discard and reweight within the three epochs below
        monkeypatch.setitem(SUN2025.presets["quick"][0.25], key, value)
    budget = Budget(epochs=3, batch_size=64, lr=0.05, lr_step_size=5, soft_samples=20, n0=20, n=100, alpha=0.01,
                    max_examples=20, train_examples=512)

    def compare(output):
        (comparison,) = run_comparison("digits", parse_methods("sun2025", get_registry()), 0.25, output, "quick",
                                       budget, log=lambda line: None)
        return comparison

    (outcome,) = compare(tmp_path).outcomes
    assert (outcome.epochs_trained, outcome.rows_certified, outcome.collapsed) == (3, 20, None)
    checkpoint = read_checkpoint(tmp_path / "noise_0.25" / "checkpoints" / "sun2025.pt")
    assert len(checkpoint["data_schedule"]["indices"]) < 512 and checkpoint["data_schedule"]["draws"] == 512
    assert outcome.summary["hyperparameters"]["discard_epoch"] == 1
    (again,) = compare(tmp_path).outcomes
    assert (again.epochs_trained, again.rows_certified, again.summary["acr"]) == (0, 0, outcome.summary["acr"])
