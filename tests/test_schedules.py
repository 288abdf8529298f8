"""Learning rates per epoch: exactly what torch's schedulers give when driven as the reference scripts drive them."""

import warnings

import pytest
import torch

from catrs_plugin.methods.macer import ORIGINAL_TRAINING
from catrs_plugin.plugins.registry import get_registry
from catrs_plugin.train.loop import TensorData, TrainConfig, train


def _optimizer(lr):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9)


def reference_steplr(epochs, lr, step_size, gamma=0.1, lr_drop=None):
    """The rate of every epoch of ``train_catrs.py``'s loop: lr_drop at the epoch's start,
    ``scheduler.step(epoch)`` (torch's closed form) at its end."""
    optimizer = _optimizer(lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    rates = []
    for epoch in range(epochs):
        if epoch == lr_drop:
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * gamma
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch deprecates step(epoch), which the reference calls
            scheduler.step(epoch)
    return rates


def reference_multistep(epochs, lr, milestones, gamma=0.1):
    """The rate of every epoch of MACER's ``main.py``: ``scheduler.step()`` at the start of each 1-based epoch."""
    optimizer = _optimizer(lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)
    rates = []
    for _ in range(1, epochs + 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # stepping before optimizer.step(), as the reference does
            scheduler.step()
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
    return rates


def ours(config):
    return [config.learning_rate(epoch) for epoch in range(config.epochs)]


def show(name, rates):
    """Print the per-epoch rates as runs of 0-based epochs, e.g. ``0-50: 0.1``."""
    runs, start = [], 0
    for epoch in range(1, len(rates) + 1):
        if epoch == len(rates) or rates[epoch] != rates[start]:
            runs.append(f"{start}-{epoch - 1}: {rates[start]:.3g}" if epoch - 1 > start else f"{start}: {rates[start]:.3g}")
            start = epoch
    print(f"{name}, lr per 0-based epoch: {'; '.join(runs)}")


def test_cifar_recipe_decays_in_epochs_51_and_101():
    config = TrainConfig(epochs=150, lr=0.1, lr_step_size=50)
    rates = ours(config)
    show("CIFAR-10 recipe", rates)
    assert rates == reference_steplr(150, 0.1, 50)  # exact: the same closed form
    assert rates[50] == 0.1 and rates[51] == pytest.approx(0.01) and rates[100] == pytest.approx(0.01)
    assert rates[101] == pytest.approx(0.001) and rates[149] == pytest.approx(0.001)


def test_imagenet_lr_drop_is_undone_after_one_epoch_as_in_the_reference():
    config = TrainConfig(epochs=90, lr=0.1, lr_step_size=30, lr_drop=85)
    rates = ours(config)
    show("ImageNet recipe", rates)
    assert rates == reference_steplr(90, 0.1, 30, lr_drop=85)
    assert rates[84:90] == pytest.approx([1e-3, 1e-4, 1e-3, 1e-3, 1e-3, 1e-3])
    assert rates[31] == pytest.approx(0.01) and rates[30] == 0.1 and rates[61] == pytest.approx(0.001)


def test_macer_own_recipe_matches_its_multistep_schedule():
    config = TrainConfig(epochs=ORIGINAL_TRAINING["epochs"], lr=ORIGINAL_TRAINING["lr"],
                         lr_milestones=ORIGINAL_TRAINING["lr_milestones"])
    rates = ours(config)
    show("MACER's own recipe", rates)
    assert rates == pytest.approx(reference_multistep(440, 0.01, (200, 400)), rel=1e-12)
    assert rates[198] == 0.01 and rates[199] == pytest.approx(1e-3) and rates[399] == pytest.approx(1e-4)


def test_training_runs_at_these_rates_and_resuming_keeps_them(digits, tmp_path):
    x, y = digits[0][:64], digits[1][:64]
    gaussian = get_registry().method("gaussian")

    def run(epochs, checkpoint):
        torch.manual_seed(0)
        model = get_registry().create_model("digits_cnn", "digits")
        config = TrainConfig(epochs=epochs, batch_size=64, lr=0.1, lr_step_size=2, lr_drop=3, seed=0,
                             checkpoint=str(checkpoint), progress=False)
        return train(model, gaussian, {}, 0.25, TensorData(x, y), config), config

    whole, config = run(6, tmp_path / "whole.pt")
    assert [h["lr"] for h in whole] == ours(config) == reference_steplr(6, 0.1, 2, lr_drop=3)
    run(4, tmp_path / "resumed.pt")
    resumed, _ = run(6, tmp_path / "resumed.pt")
    assert [(h["lr"], h["loss"]) for h in resumed] == [(h["lr"], h["loss"]) for h in whole]


def test_bad_milestones_name_the_setting():
    with pytest.raises(ValueError, match="lr_milestones"):
        TrainConfig(lr_milestones=(10, -1)).validate()
