"""CERTIFY and PREDICT: soundness against closed-form radii, reproducibility, decision rules."""

import numpy as np
import pytest
import torch
from torch import nn

from catrs_plugin.certify.smoothing import NOISE_BLOCK, Smooth


def _points(model, distances):
    """Inputs at signed distances from the hyperplane w.x + b = 0 of ``model``."""
    w = model.w.detach().flatten()
    unit = w / w.norm()
    base = -model.b * w / w.norm() ** 2
    generator = torch.Generator().manual_seed(1)
    rows = []
    for distance in distances:
        drift = torch.randn(w.numel(), generator=generator)
        drift -= (drift @ unit) * unit  # move along the hyperplane: the distance is unchanged
        rows.append(base + drift * 0.1 + distance * unit)
    return torch.stack(rows).view(len(distances), 1, 4, 4)


def test_certified_radius_never_exceeds_distance_to_hyperplane(linear_two_class):
    torch.manual_seed(0)
    model = linear_two_class(torch.randn(1, 4, 4), 0.3)
    sigma, alpha, n = 0.5, 0.01, 2_000
    distances = np.linspace(-1.2, 1.2, 121)
    x = _points(model, distances)
    smooth = Smooth(model, 2, sigma, batch_size=4_000, seed=3)
    predictions, radii = smooth.certify(x, 100, n, alpha)
    truth = np.abs(distances)
    certified = predictions != Smooth.ABSTAIN
    # The smoothed classifier of a linear classifier is the classifier itself: any prediction
    # is the true side of the hyperplane, and the true radius is the distance to it.
    assert np.all(predictions[certified] == (distances[certified] > 0))
    violations = int(np.sum(radii > truth + 1e-9))
    assert violations <= 4  # expected alpha * 121 ~ 1.2; P(> 4) < 0.01
    # ... and close to it: with n = 2,000 samples the gap is a few hundredths of sigma.
    far = truth > 0.2
    assert np.all(certified[far])
    assert np.median(truth[far] - radii[far]) < 0.1 * sigma
    assert np.all(radii[~certified] == 0.0)


def test_soundness_rate_over_repeated_runs(linear_two_class):
    """Over many seeds, a fixed point's radius exceeds the truth at most about alpha of the time."""
    torch.manual_seed(0)
    model = linear_two_class(torch.randn(1, 4, 4), 0.0)
    x = _points(model, [0.4])
    alpha = 0.05
    exceed = 0
    for seed in range(100):
        _, radius = Smooth(model, 2, 1.0, batch_size=1000, seed=seed).certify(x, 10, 200, alpha)
        exceed += int(radius[0] > 0.4)
    assert exceed <= 12  # Binomial(100, 0.05): P(> 12) < 0.002


def test_results_do_not_depend_on_batch_size_or_subset(linear_two_class):
    torch.manual_seed(0)
    model = linear_two_class(torch.randn(1, 4, 4), 0.1)
    x = _points(model, np.linspace(-0.3, 0.3, 7))
    full = Smooth(model, 2, 0.5, batch_size=1000, seed=7).certify(x, 100, 1234, 0.001)
    small = Smooth(model, 2, 0.5, batch_size=37, seed=7).certify(x, 100, 1234, 0.001)
    subset = Smooth(model, 2, 0.5, batch_size=5000, seed=7).certify(x[[5, 2]], 100, 1234, 0.001, indices=[5, 2])
    np.testing.assert_array_equal(full[0], small[0])
    np.testing.assert_array_equal(full[1], small[1])
    np.testing.assert_array_equal(full[0][[5, 2]], subset[0])
    np.testing.assert_array_equal(full[1][[5, 2]], subset[1])
    other_seed = Smooth(model, 2, 0.5, batch_size=1000, seed=8).certify(x, 100, 1234, 0.001)
    assert not np.array_equal(full[1], other_seed[1])


def test_counts_use_the_documented_noise_stream(linear_two_class):
    """Counts equal a per-block recomputation with generators seeded by (phase domain, seed, index)."""
    from catrs_plugin.certify.smoothing import ESTIMATION
    from catrs_plugin.utils.streams import CERTIFY_ESTIMATION, derive_seed

    torch.manual_seed(0)
    model = linear_two_class(torch.randn(1, 4, 4), 0.0)
    x = _points(model, [0.1])
    n = 250
    counts = Smooth(model, 2, 0.5, batch_size=64, seed=11).sample_counts(x, {ESTIMATION: n}, indices=[42])
    generator = torch.Generator().manual_seed(derive_seed(CERTIFY_ESTIMATION, 11, 42))
    expected = np.zeros(2, dtype=np.int64)
    for start in range(0, n, NOISE_BLOCK):
        noise = torch.randn((NOISE_BLOCK, 1, 4, 4), generator=generator)[: min(NOISE_BLOCK, n - start)]
        expected += np.bincount(model(x[0] + noise * 0.5).argmax(1).numpy(), minlength=2)
    np.testing.assert_array_equal(counts[0, 0], expected)


class Alternating(nn.Module):
    """Predicts classes 0 and 1 on alternate rows: an exact tie for any even sample count."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, x):
        out = torch.zeros(len(x), 3)
        out[0::2, 0] = 1.0
        out[1::2, 1] = 1.0
        return out


def test_predict_abstains_on_a_tie():
    smooth = Smooth(Alternating(), 3, 0.25, batch_size=100)
    x = np.zeros((2, 1, 2, 2), dtype=np.float32)
    counts = smooth.sample_counts(x, {2: 1000})[:, 0]
    np.testing.assert_array_equal(counts, [[500, 500, 0], [500, 500, 0]])
    np.testing.assert_array_equal(smooth.predict(x, 1000, 0.001), [-1, -1])
    predictions, radii = smooth.certify(x, 100, 1000, 0.001)
    np.testing.assert_array_equal(predictions, [-1, -1])
    np.testing.assert_array_equal(radii, [0.0, 0.0])


def test_predict_returns_a_clear_majority(linear_two_class):
    torch.manual_seed(0)
    model = linear_two_class(torch.randn(1, 4, 4), 0.0)
    x = _points(model, [-1.0, 1.0])
    np.testing.assert_array_equal(Smooth(model, 2, 0.25).predict(x, 500, 0.001), [0, 1])


def test_class_frequencies_are_probabilities(linear_two_class):
    torch.manual_seed(0)
    model = linear_two_class(torch.randn(1, 4, 4), 0.0)
    freqs = Smooth(model, 2, 0.5).class_frequencies(_points(model, [0.0, 2.0]), 1000)
    np.testing.assert_allclose(freqs.sum(1), 1.0)
    assert freqs[1, 1] > 0.99 and 0.3 < freqs[0, 1] < 0.7


def test_model_mode_is_restored(linear_two_class):
    model = linear_two_class(torch.ones(1, 4, 4), 0.0).train()
    Smooth(model, 2, 0.5).certify(np.zeros((1, 1, 4, 4), np.float32), 10, 10, 0.1)
    assert model.training


@pytest.mark.parametrize(
    "kwargs,call,match",
    [
        ({"sigma": 0.0}, None, "sigma"),
        ({"sigma": -1.0}, None, "sigma"),
        ({"batch_size": 0}, None, "batch_size"),
        ({}, ("certify", {"n0": 0}), "n0"),
        ({}, ("certify", {"n": 0}), "n must"),
        ({}, ("certify", {"alpha": 1.0}), "alpha"),
        ({}, ("certify", {"alpha": 0.0}), "alpha"),
        ({}, ("predict", {"alpha": 1.5}), "alpha"),
    ],
)
def test_bad_arguments_name_the_argument(linear_two_class, kwargs, call, match):
    model = linear_two_class(torch.ones(1, 4, 4), 0.0)
    x = np.zeros((1, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match=match):
        smooth = Smooth(model, 2, kwargs.get("sigma", 0.5), batch_size=kwargs.get("batch_size", 10))
        name, overrides = call
        if name == "certify":
            smooth.certify(x, overrides.get("n0", 10), overrides.get("n", 10), overrides.get("alpha", 0.01))
        else:
            smooth.predict(x, 10, overrides["alpha"])


@pytest.mark.parametrize(
    "x,match",
    [
        (np.zeros((0, 1, 4, 4), np.float32), "empty"),
        (np.full((1, 1, 4, 4), np.nan, np.float32), "NaN or inf"),
        (np.full((1, 1, 4, 4), np.inf, np.float32), "NaN or inf"),
        (np.zeros((1, 3, 4, 4), np.float32), "channels"),
        (np.zeros((1, 1, 5, 4), np.float32), "shape"),
        (np.zeros((1, 16), np.float32), "shape"),
    ],
)
def test_bad_inputs_are_rejected(linear_two_class, x, match):
    smooth = Smooth(linear_two_class(torch.ones(1, 4, 4), 0.0), 2, 0.5, input_shape=(1, 4, 4))
    with pytest.raises(ValueError, match=match):
        smooth.certify(x, 10, 10, 0.01)


def test_bad_indices_are_rejected(linear_two_class):
    smooth = Smooth(linear_two_class(torch.ones(1, 4, 4), 0.0), 2, 0.5)
    with pytest.raises(ValueError, match="indices"):
        smooth.certify(np.zeros((2, 1, 4, 4), np.float32), 10, 10, 0.01, indices=[0])
