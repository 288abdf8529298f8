"""Sequential CERTIFY: its exact failure probability, Monte-Carlo checks with negative controls, the
closed-form linear classifier, the noise streams it shares with CERTIFY, and the result files.

The statistics are checked where they can be computed exactly: the dynamic program below sums,
over every path of (checks, successes) the procedure can take, the probability that it stops
with a bound above the true ``pA``. The same program and the same simulation find the failure
of Clopper-Pearson re-checked after every block well above ``alpha``: the checks can fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binom, norm

from catrs_plugin.certify.files import certify_to_file
from catrs_plugin.certify.sequential import (
    SEQUENCE_SHARE,
    StoppingRule,
    confidence_sequence,
    log_mixture,
    simulate,
)
from catrs_plugin.certify.smoothing import ESTIMATION, NOISE_BLOCK, SELECTION, Smooth
from catrs_plugin.certify.stats import certified_radius, lower_confidence_bound, upper_confidence_bound
from catrs_plugin.plugins.registry import get_registry
from catrs_plugin.results.tsv import SEQUENTIAL_HEADER, read_certify_results
from catrs_plugin.utils.provenance import ProvenanceError, read_record


class PeekingClopperPearson(StoppingRule):
    """The unsound procedure: the same stopping rule on Clopper-Pearson bounds at the whole ``alpha``,
    recomputed after every block as if the sample size had been fixed in advance."""

    def certified(self, n, s):
        n, s = np.asarray(n)[..., None], np.asarray(s)[..., None]
        return lower_confidence_bound(s, n, self.alpha) >= self.thresholds

    def below(self, n, s):
        n, s = np.asarray(n)[..., None], np.asarray(s)[..., None]
        return upper_confidence_bound(s, n, self.alpha) < self.thresholds

    def bound(self, n, s):
        n, s = np.broadcast_arrays(np.asarray(n), np.asarray(s))
        return lower_confidence_bound(s, n, self.alpha)


def exact_failure(rule: StoppingRule, ps) -> np.ndarray:
    """P(the returned bound exceeds p) for each true ``p``, by dynamic programming over (check, successes).

    At each check the probability mass of the paths still running is split into those the rule
    stops (failing when their bound exceeds ``p``) and those that go on, which the next block's
    Binomial(block, p) distribution spreads over the next check's success counts.
    """
    checks = rule.checks()
    tables = []  # per check: which success counts stop, and the bound they return (independent of p)
    for n in checks:
        s = np.arange(n + 1)
        stop = rule.decided(np.full(n + 1, n), s)
        tables.append((stop, np.where(stop, rule.bound(np.full(n + 1, n), s), 0.0)))
    failures = []
    for p in ps:
        mass, drawn, failure = np.ones(1), 0, 0.0
        for n, (stop, bound) in zip(checks, tables):
            mass = np.convolve(mass, binom.pmf(np.arange(n - drawn + 1), n - drawn, p))
            drawn = n
            failure += mass[stop & (bound > p)].sum()
            mass = np.where(stop, 0.0, mass)
        assert mass.sum() < 1e-12  # every path has stopped by N
        failures.append(failure)
    return np.array(failures)


def near_thresholds(rule: StoppingRule, offsets=(1e-4, 2e-3, 2e-2)) -> np.ndarray:
    """True proportions just below and just above each threshold the budget can reach."""
    reachable = rule.thresholds[rule.final_counts <= rule.n]
    ps = np.concatenate([reachable[:, None] + np.array([-d for d in offsets] + list(offsets))]).ravel()
    return np.unique(ps[(ps > 0) & (ps < 1)])


@pytest.mark.parametrize("n,alpha", [(1000, 0.05), (2500, 0.001), (3000, 0.05)])
def test_exact_failure_probability_stays_below_alpha(n, alpha):
    rule = StoppingRule(0.5, n, alpha)
    ps = np.r_[near_thresholds(rule), 0.3, 0.6, 0.9, 0.999]
    failure = exact_failure(rule, ps)
    assert failure.max() <= alpha, dict(zip(ps[failure > alpha], failure[failure > alpha]))
    # The fallback at N alone nearly spends its share somewhere: the computation is not vacuous.
    assert failure.max() > 0.2 * rule.alpha_fallback
    # Negative control: the same rule on Clopper-Pearson bounds re-checked after every block.
    naive = exact_failure(PeekingClopperPearson(0.5, n, alpha), ps)
    assert naive.max() > 1.5 * alpha


def test_monte_carlo_with_peeking_after_every_block():
    """alpha = 0.05, so that failures are frequent enough to count. On the same simulated samples, ours stays
    below alpha and Clopper-Pearson re-checked after every block does not."""
    alpha, runs = 0.05, 4000
    rule = StoppingRule(0.5, 2000, alpha, radii=[0.25, 0.5])
    p = rule.thresholds[1] - 0.01  # just below Phi(0.25 / 0.5): certifying 0.25 would be wrong
    outcomes = np.random.default_rng(0).binomial(np.diff(rule.checks(), prepend=0), p, (runs, 20))
    failures = {}
    for name, procedure in (("sequence", rule), ("peeking", PeekingClopperPearson(0.5, 2000, alpha, [0.25, 0.5]))):
        bound, samples = simulate(procedure, outcomes)
        failures[name] = np.mean(bound > p)
        assert samples.min() >= NOISE_BLOCK and samples.max() <= 2000
    limit = alpha + 3 * np.sqrt(alpha * (1 - alpha) / runs)
    assert failures["sequence"] <= limit
    assert failures["peeking"] > limit, failures


def test_simulation_agrees_with_the_dynamic_program():
    rule = StoppingRule(0.5, 1500, 0.05, radii=[0.25])
    p = rule.thresholds[1] - 0.02
    sizes = np.diff(rule.checks(), prepend=0)
    bound, _ = simulate(rule, np.random.default_rng(1).binomial(sizes, p, (20_000, len(sizes))))
    (exact,) = exact_failure(rule, [p])
    assert abs(np.mean(bound > p) - exact) < 4 * np.sqrt(exact * (1 - exact) / 20_000) + 1e-3


def test_confidence_sequence_ends_solve_the_mixture_equation():
    n = np.array([100, 1000, 5000, 100_000, 300])
    s = np.array([73, 999, 2600, 100_000, 0])
    alpha = 0.001
    lower, upper = confidence_sequence(n, s, alpha)
    assert np.all((lower <= s / n) & (s / n <= upper))
    level = np.log(1 / alpha)
    inner = s > 0
    np.testing.assert_allclose(log_mixture(n, s, lower)[inner], level, rtol=1e-9)
    assert np.all(log_mixture(n, s, lower)[inner] >= level)  # rounded outwards: L itself is excluded
    assert lower[4] == 0.0 and upper[3] == 1.0
    # All successes: M_n(p) = B(n + 1/2, 1/2) / B(1/2, 1/2) / p^n, solved for p in closed form.
    closed = np.exp((log_mixture(100_000, 100_000, 1.0) - level) / 100_000)
    assert lower[3] == pytest.approx(closed, rel=1e-12)
    # Wider than Clopper-Pearson at the same level: the price of holding at every n at once.
    assert np.all(lower[inner] < lower_confidence_bound(s, n, alpha)[inner])


def test_rule_settings_and_bad_values():
    rule = StoppingRule(0.25, 100_000, 0.001, radii=[0.5, 0.25])
    assert rule.radii == (0.0, 0.25, 0.5) and rule.alpha_sequence == SEQUENCE_SHARE * 0.001
    assert rule.alpha_fallback == pytest.approx(0.001 - rule.alpha_sequence)
    np.testing.assert_allclose(rule.thresholds, norm.cdf([0, 1, 2]), rtol=1e-15)
    assert np.all(certified_radius(rule.thresholds, 0.25) >= rule.radii)
    assert rule.describe()["procedure"] == "sequential"
    # Radius 2.0 at sigma 0.25 needs pA = Phi(8): out of any budget of 100,000 samples' reach.
    assert StoppingRule(0.25, 100_000, 0.001, radii=[2.0]).final_counts[-1] == 100_001
    off = StoppingRule(0.25, 1000, 0.001, radii=None)
    assert off.alpha_sequence == 0.0 and not off.decided(500, 500) and off.decided(1000, 3)
    for kwargs, match in [({"alpha_sequence": 0.001}, "alpha_sequence must lie in"),
                          ({"alpha_sequence": 0.0}, "alpha_sequence must lie in"),
                          ({"radii": [-0.25]}, "radii must be finite numbers >= 0"),
                          ({"radii": [float("nan")]}, "radii must be finite")]:
        with pytest.raises(ValueError, match=match):
            StoppingRule(0.25, 1000, 0.001, **kwargs)


def test_stopping_rule_decisions_follow_the_sequence():
    rule = StoppingRule(0.25, 100_000, 0.001, alpha_sequence=0.0005)
    n = np.array([10_000, 10_000, 100, 100])
    s = np.array([10_000, 5_000, 0, 60])
    certified, below = rule.certified(n, s), rule.below(n, s)
    lower, upper = confidence_sequence(n, s, rule.alpha_sequence)
    np.testing.assert_array_equal(certified, lower[:, None] >= rule.thresholds)
    np.testing.assert_array_equal(below, upper[:, None] < rule.thresholds)
    # 10,000 clean samples certify 0, 0.25, 0.5 and 0.75 (pA >= Phi(3)); 1.0 is out of reach: done.
    decided = rule.decided(n, s)
    assert decided.tolist() == [True, False, True, False]
    assert rule.bound(n, s)[0] >= rule.thresholds[3]


# --- the procedure on a model -------------------------------------------------------------------

SIGMA = 0.5


@pytest.fixture(scope="module")
def digits_model():
    """An untrained digits CNN (seed 2), whose noisy predictions spread over several classes."""
    from catrs_adapters.datasets import load_digits

    torch.manual_seed(2)
    model = get_registry().create_model("digits_cnn", "digits").eval()
    x, y = load_digits("test")
    return model, x[:16], y[:16], np.arange(200, 216)


def test_stopping_off_is_exactly_certify(digits_model):
    model, x, _, indices = digits_model
    exact = Smooth(model, 10, SIGMA, batch_size=700, seed=3).certify(x, 130, 1234, 0.001, indices)
    result = Smooth(model, 10, SIGMA, batch_size=370, seed=3).certify_sequential(x, 130, 1234, 0.001, radii=None,
                                                                               indices=indices)
    np.testing.assert_array_equal(result.predictions, exact[0])
    np.testing.assert_array_equal(result.radii, exact[1])
    assert result.samples.tolist() == [1234] * len(x)
    assert len(set(exact[1])) > 5  # radii spread: a change of one count shows


def reference_path(model, x, index, selected, n, seed=3):
    """Successes of ``selected`` after each block of the first ``n`` estimation samples, drawn block by block
    from the example's stream and counted on the host."""
    generator = Smooth(model, 10, SIGMA, seed=seed).noise_stream(index, ESTIMATION)
    checks, successes, total = [], [], 0
    with torch.no_grad():
        for start in range(0, n, NOISE_BLOCK):
            noise = torch.randn((NOISE_BLOCK, *x.shape), generator=generator)[: min(NOISE_BLOCK, n - start)]
            total += int((model(torch.as_tensor(x) + noise * SIGMA).argmax(1) == selected).sum())
            checks.append(start + len(noise))
            successes.append(total)
    return np.array(checks), np.array(successes)


def test_stops_are_where_the_rule_stops_the_estimation_stream(digits_model):
    """Each input stops at the first block end the rule decides on its own stream, with Cohen's rule on that bound."""
    model, x, _, indices = digits_model
    result = Smooth(model, 10, SIGMA, batch_size=1000, seed=3).certify_sequential(x, 130, 4000, 0.01, indices=indices)
    selected = Smooth(model, 10, SIGMA, seed=3).sample_counts(x, {SELECTION: 130}, indices)[:, 0].argmax(1)
    rule = StoppingRule(SIGMA, 4000, 0.01)
    assert len(set(result.samples)) >= 4 and result.samples.min() < 4000  # inputs stop at different times
    for row in range(len(x)):
        checks, successes = reference_path(model, x[row], int(indices[row]), selected[row], 4000)
        stop = int(np.flatnonzero(rule.decided(checks, successes))[0])
        assert result.samples[row] == checks[stop]
        bound = rule.bound(checks[stop], successes[stop])
        expected = (-1, 0.0) if bound < 0.5 else (selected[row], float(certified_radius(bound, SIGMA)))
        assert (result.predictions[row], result.radii[row]) == expected


def test_results_do_not_depend_on_batch_size_or_companions(digits_model):
    model, x, _, indices = digits_model
    results = [Smooth(model, 10, SIGMA, batch_size=b, seed=3).certify_sequential(x, 100, 3000, 0.01, indices=indices)
               for b in (100, 370, 1000, 5000)]
    order = np.random.default_rng(0).permutation(len(x))[:7]
    subset = Smooth(model, 10, SIGMA, batch_size=700, seed=3).certify_sequential(x[order], 100, 3000, 0.01,
                                                                               indices=indices[order])
    for other in results[1:]:
        for field in ("predictions", "radii", "samples"):
            np.testing.assert_array_equal(getattr(other, field), getattr(results[0], field))
    for field in ("predictions", "radii", "samples"):
        np.testing.assert_array_equal(getattr(subset, field), getattr(results[0], field)[order])
    assert len(set(results[0].samples)) >= 4


def test_label_aware_exit(digits_model):
    model, x, _, indices = digits_model
    smooth = Smooth(model, 10, SIGMA, batch_size=1000, seed=3)
    selected = smooth.sample_counts(x, {SELECTION: 100}, indices)[:, 0].argmax(1)
    labels = np.where(np.arange(len(x)) % 2 == 0, selected, (selected + 1) % 10)
    plain = smooth.certify_sequential(x, 100, 3000, 0.01, indices=indices)
    aware = smooth.certify_sequential(x, 100, 3000, 0.01, labels=labels, indices=indices)
    wrong = labels != selected
    assert wrong.sum() == len(x) // 2
    np.testing.assert_array_equal(aware.samples[wrong], 0)
    np.testing.assert_array_equal(aware.predictions[wrong], selected[wrong])
    np.testing.assert_array_equal(aware.radii[wrong], 0.0)
    for field in ("predictions", "radii", "samples"):
        np.testing.assert_array_equal(getattr(aware, field)[~wrong], getattr(plain, field)[~wrong])
    # Either way the row is incorrect: CERTIFY returns the selected class or abstains.
    assert np.all(aware.predictions[wrong] != labels[wrong]) and np.all(plain.predictions[wrong] != labels[wrong])


def test_linear_classifier_failure_rate_stays_below_alpha(linear_two_class):
    """f(x) = 1[w.x + b > 0]: the smoothed classifier is f itself and the true radius the distance to the
    hyperplane. Points just beyond each radius of the grid, where an overstated bound certifies too much."""
    torch.manual_seed(0)
    model = linear_two_class(torch.randn(1, 4, 4), 0.2)
    w = model.w.detach().flatten()
    unit = w / w.norm()
    base = -model.b * w / w.norm() ** 2
    alpha, sigma = 0.05, 0.5
    grid = np.arange(0.0, 1.01, 0.25)
    distances = np.concatenate([np.repeat(grid + 0.02, 40), -np.repeat(grid[1:] + 0.02, 20)])
    x = torch.stack([base + d * unit for d in distances]).view(len(distances), 1, 4, 4)
    result = Smooth(model, 2, sigma, batch_size=2000, seed=4).certify_sequential(x, 20, 1500, alpha, radii=grid)
    certified = result.predictions != -1
    wrong_side = certified & (result.predictions != (distances > 0))
    too_large = certified & (result.radii > np.abs(distances))
    failures = int(np.sum(wrong_side | too_large))
    assert failures <= binom.ppf(0.999, len(distances), alpha)
    assert certified.mean() > 0.5 and result.samples.mean() < 1500  # it does certify, and stops early


def test_bad_arguments(digits_model):
    model, x, _, _ = digits_model
    smooth = Smooth(model, 10, SIGMA)
    with pytest.raises(ValueError, match="labels must hold 16 class indices"):
        smooth.certify_sequential(x, 10, 100, 0.01, labels=[1, 2])
    with pytest.raises(ValueError, match="n0 must"):
        smooth.certify_sequential(x, 0, 100, 0.01)
    with pytest.raises(ValueError, match="alpha_sequence must lie in"):
        smooth.certify_sequential(x, 10, 100, 0.01, alpha_sequence=0.02)


# --- result files --------------------------------------------------------------------------------


def _rows(path):
    return [line.rsplit("\t", 1)[0] for line in path.read_text().splitlines()]


def test_file_rows_record_and_resume(digits_model, tmp_path):
    from catrs_adapters.datasets import load_digits

    model, _, _, _ = digits_model
    x, y = load_digits("test")
    kwargs = dict(n0=50, n=2000, alpha=0.01, batch_size=300, seed=3, progress=False, sequential=True,
                  radii=(0.25, 0.5))
    whole, part = tmp_path / "whole.tsv", tmp_path / "part.tsv"
    assert certify_to_file(model, 10, SIGMA, x, y, whole, np.arange(30), **kwargs) == 30
    assert certify_to_file(model, 10, SIGMA, x, y, part, np.arange(12), **kwargs) == 12
    with open(part, "a") as handle:
        handle.write("12\t3\t")  # a row cut short by a kill
    assert certify_to_file(model, 10, SIGMA, x, y, part, np.arange(30), **kwargs) == 18
    assert _rows(part) == _rows(whole)
    assert tuple(whole.read_text().splitlines()[0].split("\t")) == SEQUENTIAL_HEADER
    results = read_certify_results(whole)
    assert results.samples is not None and results.samples.max() <= 2000
    wrong = results.label != Smooth(model, 10, SIGMA, seed=3).sample_counts(x[:30], {SELECTION: 50})[:, 0].argmax(1)
    np.testing.assert_array_equal(results.samples[wrong], 0)  # the label-aware exit
    np.testing.assert_array_equal(results.correct[wrong], 0)
    record = read_record(whole)
    assert (record["procedure"], record["radii"]) == ("sequential", [0.0, 0.25, 0.5])
    assert record["alpha_sequence"] == pytest.approx(SEQUENCE_SHARE * 0.01)
    with pytest.raises(ProvenanceError, match="radii"):
        certify_to_file(model, 10, SIGMA, x, y, whole, np.arange(30), **{**kwargs, "radii": (0.25,)})
    with pytest.raises(ProvenanceError, match="procedure"):
        certify_to_file(model, 10, SIGMA, x, y, whole, np.arange(30),
                        **{k: v for k, v in kwargs.items() if k not in ("sequential", "radii")})


def test_command_line_merge_and_analyze(tmp_path, capsys):
    from catrs_plugin.certify.distributed import merge_shards
    from catrs_plugin.cli import main

    checkpoint = tmp_path / "gaussian.pt"
    assert main(["train", "--dataset", "digits", "--method", "gaussian", "--sigma", "0.25", "--epochs", "2",
                 "--batch", "64", "--checkpoint", str(checkpoint), "--quiet", "--device", "cpu"]) == 0
    common = ["certify", "digits", str(checkpoint), "0.25"]
    options = ["--N0", "50", "--N", "5000", "--max", "20", "--device", "cpu", "--quiet", "--batch", "500"]
    sequential, exact = tmp_path / "sequential.tsv", tmp_path / "exact.tsv"
    assert main([*common, str(sequential), *options, "--sequential", "--radii", "0.25,0.5"]) == 0
    assert main([*common, str(exact), *options]) == 0
    seq, ex = read_certify_results(sequential), read_certify_results(exact)
    assert ex.samples is None and seq.samples.mean() < 5000
    # Identical decisions wherever both certify with room to spare at the requested radii.
    for r in (0.25, 0.5):
        assert abs(np.mean((seq.correct == 1) & (seq.radius >= r)) - np.mean((ex.correct == 1) & (ex.radius >= r))) \
            <= 0.1
    capsys.readouterr()
    assert main(["analyze", str(sequential), str(exact), "--radii", "0", "0.25", "0.5"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[-1] == "samples"
    assert table[1].split()[-1] == f"{seq.samples.mean():.0f}" and table[2].split()[-1] == "5000"
    # Shards of a sequential run merge like those of an exact one.
    lines = sequential.read_text().splitlines()
    for rank in (0, 1):
        (tmp_path / f"merged.tsv.rank{rank}").write_text("\n".join([lines[0], *lines[1 + rank :: 2]]) + "\n")
        (tmp_path / f"merged.tsv.rank{rank}.provenance.json").write_text(
            (tmp_path / "sequential.tsv.provenance.json").read_text())
    assert merge_shards(tmp_path / "merged.tsv", expected=seq.idx) == 20
    assert _rows(tmp_path / "merged.tsv") == _rows(sequential)
    for extra, message in [(["--radii", "0.25"], "--radii needs --sequential"),
                           (["--sequential", "--radii", "-1"], "argument --radii: must be comma-separated radii"),
                           (["--sequential", "--alpha-sequence", "0.5"], "--alpha-sequence must lie in (0, --alpha)")]:
        assert main([*common, str(tmp_path / "bad.tsv"), *options, *extra]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad.tsv").exists()


class TurnsNaN(torch.nn.Module):
    """Finite logits for its first forward pass (the selection), NaN ever after (the estimation)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        logits = torch.zeros(len(x), 3)
        logits[:, 1] = 1.0 if self.calls == 1 else float("nan")
        return logits


def test_non_finite_logits_in_the_estimation_are_refused():
    x = np.zeros((3, 1, 2, 2), np.float32)
    with pytest.raises(ValueError, match="NaN or infinite logits"):
        Smooth(TurnsNaN(), 3, 0.25, batch_size=1000).certify_sequential(x, 10, 500, 0.01)
