"""ART L2 PGD on the smoothed classifier, next to the certificates.

For a linear two-class base classifier the smoothed classifier is the same half-space and an
input's true robust radius is its distance to the hyperplane; certified accuracy at radius
``r`` may then exceed the accuracy under a PGD attack of radius ``r`` only by sampling error.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from catrs_adapters.art.empirical import attack_to_file, pgd_examples
from catrs_plugin.certify.smoothing import Smooth
from catrs_plugin.compare import Budget, parse_methods, run_comparison
from catrs_plugin.compare.plan import ATTACK
from catrs_plugin.plugins.registry import get_registry
from catrs_plugin.results.metrics import certified_accuracy
from catrs_plugin.results.tsv import predict_accuracy
from catrs_plugin.utils.provenance import ProvenanceError

SIGMA, N, ALPHA = 0.25, 2000, 0.001
EPS = (0.1, 0.2)


def sampling_error(accuracy: float, count: int) -> float:
    """Three standard errors of an accuracy measured on ``count`` examples, plus the failure probability."""
    return 3 * np.sqrt(max(accuracy * (1 - accuracy), 1 / count) / count) + ALPHA


@pytest.fixture(scope="module")
def half_space(linear_two_class_module):
    g = torch.Generator().manual_seed(0)
    w = torch.tensor([[[1.0, -2.0], [0.5, 1.5]]])
    model = linear_two_class_module(w, -0.5)
    x = (0.3 + 0.4 * torch.rand(60, 1, 2, 2, generator=g)).numpy()
    score = x.reshape(60, -1) @ w.flatten().numpy() - 0.5
    y = (score > 0).astype(np.int64)
    distance = np.abs(score) / float(w.norm())
    return model, x, y, distance


@pytest.fixture(scope="module")
def linear_two_class_module():
    from conftest import LinearTwoClass

    return LinearTwoClass


def test_pgd_moves_to_the_hyperplane_and_certificates_stay_below_empirical_accuracy(half_space, tmp_path):
    model, x, y, distance = half_space
    smooth = Smooth(model, 2, SIGMA, batch_size=4000, seed=0)
    prediction, radius = smooth.certify(x, 100, N, ALPHA, indices=np.arange(len(x)))
    correct = (prediction == y).astype(int)
    assert np.all(radius[correct == 1] <= distance[correct == 1] + 1e-6)  # certificates are sound here

    for eps in EPS:
        adversarial = pgd_examples(model, 2, (1, 2, 2), SIGMA, x, y, eps, steps=5, attack_samples=16, seed=0)
        moved = np.linalg.norm((adversarial - x).reshape(len(x), -1), axis=1)
        assert np.all(moved <= eps + 1e-5) and adversarial.min() >= 0 and adversarial.max() <= 1
        assert np.all(moved[distance < eps] > 0.99 * distance[distance < eps])  # it reaches the hyperplane

        outfile = tmp_path / f"eps_{eps}.tsv"
        written = attack_to_file(model, 2, (1, 2, 2), SIGMA, x, y, np.arange(len(x)), eps, outfile, steps=5,
                                 attack_samples=16, n=N, alpha=ALPHA, batch_size=4000)
        assert written == len(x) and (tmp_path / f"eps_{eps}.npy").exists()
        empirical = predict_accuracy(outfile)
        certified = float(certified_accuracy(radius, correct, [eps])[0])
        assert certified <= empirical + sampling_error(empirical, len(x))
        assert empirical < 1.0 - np.mean(distance < eps) / 2  # the attack flips the examples within eps
        assert attack_to_file(model, 2, (1, 2, 2), SIGMA, x, y, np.arange(len(x)), eps, outfile, steps=5,
                              attack_samples=16, n=N) == 0  # the same run: nothing recomputed
        with pytest.raises(ProvenanceError, match=r"adversarial examples .* \(attack_samples was 16, now 32; steps "
                                                  r"was 5, now 10\)"):
            attack_to_file(model, 2, (1, 2, 2), SIGMA, x, y, np.arange(len(x)), eps, outfile, n=N)
        with pytest.raises(ProvenanceError, match=r"result file .* \(alpha was 0.001, now 0.01\)"):
            attack_to_file(model, 2, (1, 2, 2), SIGMA, x, y, np.arange(len(x)), eps, outfile, steps=5,
                           attack_samples=16, n=N, alpha=0.01)


def test_compare_reports_empirical_accuracy_next_to_certified_accuracy(tmp_path):
    budget = Budget(epochs=2, batch_size=64, lr=0.1, lr_step_size=2, soft_samples=10, n0=50, n=500, alpha=ALPHA,
                    skip=6, attack_steps=4, attack_samples=8, train_examples=256)
    (comparison,) = run_comparison("digits", parse_methods("gaussian", get_registry()), SIGMA, tmp_path, "quick",
                                   budget, attack_eps=(0.25,), log=lambda line: None, certify_collapsed=True)
    summary = comparison.summaries[0]
    empirical, certified = summary["empirical_accuracy"]["0.25"], summary["certified_accuracy"]["0.25"]
    assert certified <= empirical + sampling_error(empirical, summary["n"])
    assert "PGD 0.25" in (comparison.directory / "summary.md").read_text()
    (again,) = run_comparison("digits", parse_methods("gaussian", get_registry()), SIGMA, tmp_path, "quick", budget,
                              attack_eps=(0.25,), log=lambda line: None, certify_collapsed=True)
    assert again.outcomes[0].rows_attacked == 0 and again.summaries[0]["empirical_accuracy"] == {"0.25": empirical}


def test_the_attack_is_registered_through_the_entry_point():
    registry = get_registry()
    assert registry.attack(ATTACK).to_file is attack_to_file
    with pytest.raises(ValueError, match="unknown attack 'fgsm'; valid: art_l2_pgd"):
        registry.attack("fgsm")
