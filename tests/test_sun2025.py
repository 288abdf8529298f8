"""Sun et al. (ICML 2025) against a transcription of its reference, ``code/train.py`` of ``eth-sri/acr-weakness``.

The ``reference_*`` functions below restate, operation by operation, what the reference's
``radius_PGD.attack``, ``train`` (one optimizer step's loss), ``p_correct``, the discarding
(``np.where(p_corr >= threshold)``), the weights (``norm.ppf(proportion_confint(...)[0])``, with
statsmodels as the reference calls it) and ``WeightedRandomSampler`` compute, with the global
random generator replaced by an explicit one so that both sides see the same noise. Our module
must give the same numbers on fixed inputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm
from statsmodels.stats.proportion import proportion_confint
from torch import nn
from torch.utils.data import WeightedRandomSampler

from catrs_plugin.methods import sun2025
from catrs_plugin.methods.base import DataSchedule, EpochView, TrainBatch
from catrs_plugin.methods.sun2025 import SUN2025, sphere_attack, sun2025_schedule
from catrs_plugin.train.data_schedule import scheduled_order
from catrs_plugin.train.loop import TensorData
from catrs_plugin.utils import streams
from catrs_plugin.utils.streams import derive_seed

SIGMA = 0.25


@pytest.fixture
def linear():
    """A float64 linear classifier of 8x8 grey images whose pA spreads over (0, 1) on the digits."""
    g = torch.Generator().manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(10, 64, generator=g, dtype=torch.float64))
        model[1].bias.zero_()
    return model


# ----------------------------------------------------------------------------- the reference, transcribed

def reference_attack(model, inputs, labels, noises, steps, step_size):
    """``radius_PGD(steps, step_size, 'l2').attack(model, inputs, labels, noises)`` (a list of M noises)."""
    def batch_l2norm(x):
        return torch.norm(x.reshape(x.size(0), -1), dim=1)

    m = len(noises)
    inputs_r = inputs.repeat(m, 1, 1, 1)
    labels_r = labels.repeat(m)
    noise0 = torch.cat(noises, dim=0)
    noise = noise0.detach()
    noise0_norm = batch_l2norm(noise0).view(-1, 1, 1, 1)
    noise_best = torch.zeros_like(noise)
    best_indices = torch.ones(len(noise), dtype=torch.bool) * steps
    for i in range(steps):
        noise.requires_grad_()
        logits_r = model(inputs_r + noise)
        new_best = (torch.argmax(logits_r, dim=1) != labels_r) & (best_indices == steps)
        best_indices[new_best] = i
        noise_best[new_best] = noise[new_best]
        loss = nn.CrossEntropyLoss(reduction="none")(logits_r, labels_r).sum() / m
        grad = torch.autograd.grad(loss, [noise])[0]
        grad = grad / (batch_l2norm(grad).view(-1, 1, 1, 1) + 1e-8)
        noise = noise + step_size * grad
        noise = noise / (batch_l2norm(noise).view(-1, 1, 1, 1) + 1e-8) * noise0_norm
    new_best = best_indices == steps
    noise_best[new_best] = noise[new_best]
    return torch.chunk(noise_best, m, dim=0)


def reference_loss(model, inputs, targets, noises, adv_active, steps, step_size):
    """The loss of one mini-batch in the reference's ``train``: attack (eval mode, frozen), then CE in train mode."""
    model.eval()
    if adv_active:
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        noises = reference_attack(model, inputs, targets, noises, steps, step_size)
        for parameter in model.parameters():
            parameter.requires_grad_(True)
    model.train()
    inputs_c = torch.cat([inputs + noise for noise in noises], dim=0)
    outputs = model(inputs_c)
    return nn.CrossEntropyLoss(reduction="none")(outputs, targets.repeat(len(noises))).mean()


def reference_p_correct(model, x, y, n0, batch_size, sigma, generator):
    """``p_correct``: fraction of ``n0`` noisy copies classified correctly, in loader batches of ``batch_size``."""
    model.eval()
    confidences = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            inputs = x[start : start + batch_size].repeat(n0, 1, 1, 1)
            target = y[start : start + batch_size].repeat(n0)
            noise = torch.randn(inputs.shape, generator=generator, dtype=inputs.dtype) * sigma
            prediction = model(inputs + noise).argmax(dim=1).view((n0, -1))
            confidences.append((prediction == target.view((n0, -1))).float().mean(dim=0).numpy())
    return np.concatenate(confidences, axis=0)


def reference_weight(p_corr_light, num_noise):
    corr_num = (np.clip(p_corr_light, a_min=0.75, a_max=1.0) * num_noise).astype(int)
    return norm.ppf(proportion_confint(corr_num, num_noise, alpha=2 * 0.1, method="beta")[0])


def reference_events(epochs, ds_hard, ds_epoch, dataset_weight, every):
    """Per epoch of ``main``: (discards now, reweights now, samples with replacement, attack active)."""
    ds_epochs = [ds_epoch] if ds_hard else [0]
    update = list(range(ds_epochs[-1], epochs, every)) if dataset_weight else [epochs + 1]
    return [(ds_hard and epoch in ds_epochs, dataset_weight and epoch in update, epoch >= ds_epochs[-1],
             epoch >= ds_epochs[-1]) for epoch in range(epochs)]


# ----------------------------------------------------------------------------- the loss

@pytest.mark.parametrize("epoch, active", [(5, False), (6, True), (9, True)])
def test_loss_equals_the_reference_train_step(linear, digits, epoch, active):
    x, y = torch.from_numpy(digits[0][:6]).double(), torch.from_numpy(digits[1][:6])
    hp = SUN2025.hyperparameters(discard_epoch=6, attack_steps=3, attack_step_size=0.25)
    ours = SUN2025.compute_loss(linear, TrainBatch(x, y, None, SIGMA, torch.Generator().manual_seed(4), epoch), hp)
    noise = torch.randn((4, *x.shape), generator=torch.Generator().manual_seed(4)) * SIGMA  # as TrainBatch draws it
    theirs = reference_loss(linear, x, y, list(noise), active, 3, 0.25)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=0)
    plain = reference_loss(linear, x, y, list(noise), False, 3, 0.25)
    assert (ours != plain) == active  # the attack changes the loss once active


def test_attack_equals_radius_pgd_and_keeps_every_norm(linear, digits):
    x, y = torch.from_numpy(digits[0][:8]).double(), torch.from_numpy(digits[1][:8])
    noise = torch.randn((3, *x.shape), generator=torch.Generator().manual_seed(2), dtype=x.dtype) * SIGMA
    for steps in (1, 4):
        ours = sphere_attack(linear, x, y, noise, steps, 0.5)
        theirs = torch.stack(reference_attack(linear, x, y, list(noise), steps, 0.5))
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(ours.flatten(2).norm(dim=2), noise.flatten(2).norm(dim=2))
        assert not torch.equal(ours, noise)
    assert linear.training and all(p.requires_grad for p in linear.parameters())  # restored


# ----------------------------------------------------------------------------- the data schedule

def view_of(model, data, epoch, seed=0):
    generator = torch.Generator().manual_seed(derive_seed(streams.DATA_SCHEDULE, seed, epoch))
    return EpochView(model, epoch, SIGMA, len(data.x), lambda i, b: data.views(i, b, torch.device("cpu"), seed, epoch),
                     generator)


def test_discarding_and_weights_equal_the_reference(linear, digits):
    data = TensorData(digits[0][:300], digits[1][:300])
    data.x = data.x.double()  # the float64 model reads float64 inputs
    hp = SUN2025.hyperparameters(discard_epoch=3, discard_threshold=0.3, reweight_every=2)
    schedule = sun2025_schedule(view_of(linear, data, 3), DataSchedule.everything(300), **hp)

    generator = torch.Generator().manual_seed(derive_seed(streams.DATA_SCHEDULE, 0, 3))
    tx, ty = data.x, data.y
    p_corr = reference_p_correct(linear, tx, ty, 100, 8192 // 100, SIGMA, generator)
    easy = np.where(p_corr >= 0.3)[0]
    assert 0 < len(easy) < 300  # the fixture discards some examples, not all
    light = reference_p_correct(linear, tx[easy], ty[easy], 16, 8192 // 16, SIGMA, generator)
    weight = reference_weight(light, 16)
    assert len(np.unique(weight)) > 2  # the weights differ between examples
    np.testing.assert_array_equal(schedule.indices, easy)
    np.testing.assert_allclose(schedule.weights, weight, rtol=1e-12)
    assert schedule.draws == 300  # the reference draws args.dataset_num examples per epoch

    # The epoch's draws are WeightedRandomSampler(weight, 300, replacement=True)'s, mapped to the kept examples.
    sampler = WeightedRandomSampler(weight, 300, replacement=True,
                                    generator=torch.Generator().manual_seed(derive_seed(streams.EPOCH_ORDER, 0, 3)))
    assert scheduled_order(schedule, 0, 3).tolist() == easy[list(sampler)].tolist()


@pytest.mark.parametrize("ds_hard, dataset_weight", [(True, True), (True, False), (False, True), (False, False)])
def test_epochs_of_discarding_reweighting_and_attack_follow_the_reference(monkeypatch, ds_hard, dataset_weight):
    calls, attacks = [], []

    def counts(view, indices, samples):
        calls.append(samples)
        return (7 * np.arange(len(indices))) % (samples + 1)  # pA spread over [0, 1]

    def attack(model, inputs, targets, noises, steps, step_size):
        attacks.append(steps)
        return noises

    monkeypatch.setattr(sun2025, "correct_counts", counts)
    monkeypatch.setattr(sun2025, "sphere_attack", attack)
    hp = SUN2025.hyperparameters(discard_epoch=4 if ds_hard else None, reweight_every=3 if dataset_weight else None)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    schedule, ours = DataSchedule.everything(40), []
    for epoch in range(14):
        before = (len(calls), len(attacks))
        schedule = sun2025_schedule(EpochView(None, epoch, SIGMA, 40, None, None), schedule, **hp)
        SUN2025.compute_loss(model, TrainBatch(torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.long), None, SIGMA,
                                               torch.Generator(), epoch), hp)
        samples = calls[before[0]:]
        ours.append((100 in samples, 16 in samples, schedule.draws == 40, len(attacks) > before[1]))
    assert ours == reference_events(14, ds_hard, 4, dataset_weight, 3)
    if ds_hard:  # the reference keeps p_corr >= 0.5 of 100 samples
        assert schedule.indices.tolist() == [i for i in range(40) if (7 * i) % 101 >= 50]


def test_discarding_everything_or_weights_below_zero_are_clear_errors(monkeypatch):
    monkeypatch.setattr(sun2025, "correct_counts", lambda view, indices, samples: np.zeros(len(indices), np.int64))
    view = EpochView(None, 2, SIGMA, 10, None, None)
    with pytest.raises(ValueError, match="discarded every training example at epoch 3.*lower discard_threshold"):
        sun2025_schedule(view, DataSchedule.everything(10), **SUN2025.hyperparameters(discard_epoch=2))
    with pytest.raises(ValueError, match="must be > 0.*raise reweight_clip"):
        sun2025_schedule(view, DataSchedule.everything(10),
                         **SUN2025.hyperparameters(discard_epoch=None, reweight_every=1, reweight_clip=0.3))


def test_presets_follow_the_reference_scripts():
    expected = {0.25: (60, 0.5, 3, 0.25), 0.5: (70, 0.4, 6, 0.25), 1.0: (60, 0.4, 4, 0.5)}
    for sigma, (epoch, threshold, steps, size) in expected.items():
        hp = SUN2025.hyperparameters(sigma, "paper")
        assert (hp["discard_epoch"], hp["discard_threshold"], hp["attack_steps"], hp["attack_step_size"]) == \
            (epoch, threshold, steps, size)
        assert (hp["num_noise_vec"], hp["discard_samples"], hp["reweight_every"], hp["reweight_samples"],
                hp["reweight_clip"], hp["reweight_alpha"]) == (4, 100, 10, 16, 0.75, 0.1)
        quick = SUN2025.hyperparameters(sigma, "quick")  # 150 epochs scaled to the quick preset's 40
        assert (quick["discard_epoch"], quick["reweight_every"]) == (round(epoch * 40 / 150), 3)
        assert {k: v for k, v in quick.items() if k not in ("discard_epoch", "reweight_every")} == \
            {k: v for k, v in hp.items() if k not in ("discard_epoch", "reweight_every")}
    assert SUN2025.train_settings("paper") == {"lr_milestones": (50, 100)}
