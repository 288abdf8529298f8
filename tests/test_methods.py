"""The comparison methods' losses against their formulas, on small fixed tensors.

Every expected value is recomputed here independently of the package: in numpy, example by
example and noise by noise, with the gradient of the smoothed negative log-likelihood of a
linear model written out by hand (``W^T p_y (e_y - p)`` per noise) and scipy's normal
quantile for MACER. The model is linear in float64, so that finite differences of the numpy
formulas check the gradients too (what is and what is not detached).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm
from torch import nn

from catrs_plugin.methods.base import TrainBatch
from catrs_plugin.methods.consistency import CONSISTENCY, consistency_loss
from catrs_plugin.methods.gaussian import GAUSSIAN
from catrs_plugin.methods.macer import MACER, macer_loss
from catrs_plugin.methods.smoothadv import SMOOTHADV, smoothadv_attack, smoothadv_loss
from catrs_plugin.methods.smoothmix import SMOOTHMIX, smoothmix_attack, smoothmix_loss
from catrs_plugin.methods.stability import STABILITY, stability_loss

B, C, M, SHAPE = 4, 3, 3, (1, 2, 2)
D = int(np.prod(SHAPE))


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture
def setup():
    """A float64 linear model, inputs in [0, 1], labels (one of them misclassified) and noises."""
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(C, D, generator=g, dtype=torch.float64) * 2
    bias = torch.randn(C, generator=g, dtype=torch.float64) * 0.5
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, C)).double()
    with torch.no_grad():
        model[1].weight.copy_(weight)
        model[1].bias.copy_(bias)
    x = torch.rand(B, *SHAPE, generator=g, dtype=torch.float64)
    y = torch.tensor([2, 0, 1, 1])
    noises = torch.randn(M, B, *SHAPE, generator=g, dtype=torch.float64) * 0.25
    return model, x, y, noises


def params(model):
    linear = model[1]
    return linear.weight.detach().numpy().copy(), linear.bias.detach().numpy().copy()


def np_logits(w, b, x):
    return x.reshape(len(x), -1) @ w.T + b


def np_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def check_gradient(model, loss, formula, rtol=1e-5):
    """Autograd gradient of ``loss()`` against central differences of ``formula(w, b)`` in numpy."""
    model.zero_grad()
    loss().backward()
    w, b = params(model)
    for array, grad in ((w, model[1].weight.grad.numpy()), (b, model[1].bias.grad.numpy())):
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + 1e-6
            up = formula(w, b)
            array[index] = saved - 1e-6
            down = formula(w, b)
            array[index] = saved
            numeric[index] = (up - down) / 2e-6
        np.testing.assert_allclose(grad, numeric, rtol=rtol, atol=1e-7)


def smoothed_nll_grad(w, b, x, y, noises):
    """Per example, the gradient in x of ``-log mean_i softmax(W (x + d_i) + b)[y]`` (by hand)."""
    grads = np.zeros_like(x)
    for k in range(len(x)):
        probs = [np_softmax(np_logits(w, b, (x[k] + d[k])[None]))[0] for d in noises]
        p_bar = np.mean([p[y[k]] for p in probs])
        onehot = np.eye(len(b))[y[k]]
        mean_grad = np.mean([w.T @ (p[y[k]] * (onehot - p)) for p in probs], axis=0)
        grads[k] = (-mean_grad / p_bar).reshape(x[k].shape)
    return grads


def renorm(v, maxnorm):
    """Scale ``v`` down to norm ``maxnorm`` if it is longer (as ``Tensor.renorm`` does, to 1e-7)."""
    length = np.linalg.norm(v)
    return v * (maxnorm / (length + 1e-7)) if length > maxnorm else v


def drawn(generator, shape, sigma):
    """Noise as :meth:`TrainBatch.gaussian` draws it (float32 standard normals times sigma), in numpy."""
    return (torch.randn(shape, generator=generator) * sigma).double().numpy()


def mean_xent(w, b, inputs, y, noises):
    """Mean over every noise and example of ``CE(W (x + d_i) + b, y)``."""
    return np.mean([-np_log_softmax(np_logits(w, b, inputs + d))[np.arange(len(y)), y] for d in noises])


# ----------------------------------------------------------------------------- presets

PAPER_TABLE = {  # DESIGN.md section 3, CIFAR-10 (the CAT-RS paper's settings for every baseline; MACER at 0.5:
    # lambda 4, from the folder of the certified checkpoint, which train_macer.py names after its --lbd)
    "stability": {0.25: {"lbd": 2.0}, 0.5: {"lbd": 2.0}, 1.0: {"lbd": 1.0}},
    "smoothadv": {
        0.25: {"epsilon": 1.0, "num_steps": 10, "warmup": 10, "num_noise_vec": 4},
        0.5: {"epsilon": 1.0, "num_steps": 10, "warmup": 10, "num_noise_vec": 8},
        1.0: {"epsilon": 2.0, "num_steps": 10, "warmup": 10, "num_noise_vec": 2},
    },
    "macer": {
        0.25: {"num_noise_vec": 16, "beta": 16.0, "gamma": 8.0, "lbd": 12.0, "deferred": None},
        0.5: {"num_noise_vec": 16, "beta": 16.0, "gamma": 8.0, "lbd": 4.0, "deferred": None},
        1.0: {"num_noise_vec": 16, "beta": 16.0, "gamma": 8.0, "lbd": 12.0, "deferred": 50},
    },
    "consistency": {
        0.25: {"num_noise_vec": 2, "lbd": 20.0, "eta": 0.5},
        0.5: {"num_noise_vec": 2, "lbd": 10.0, "eta": 0.5},
        1.0: {"num_noise_vec": 2, "lbd": 10.0, "eta": 0.5},
    },
    "smoothmix": {
        0.25: {"num_noise_vec": 2, "num_steps": 4, "step_size": 0.5, "mix_step": 0, "eta": 5.0},
        0.5: {"num_noise_vec": 2, "num_steps": 4, "step_size": 1.0, "mix_step": 1, "eta": 5.0},
        1.0: {"num_noise_vec": 2, "num_steps": 4, "step_size": 2.0, "mix_step": 1, "eta": 5.0},
    },
}
METHODS = {m.name: m for m in (STABILITY, SMOOTHADV, MACER, CONSISTENCY, SMOOTHMIX)}


@pytest.mark.parametrize("name", sorted(PAPER_TABLE))
def test_paper_presets_match_the_table(name):
    method = METHODS[name]
    for sigma, expected in PAPER_TABLE[name].items():
        resolved = method.hyperparameters(sigma, "paper")
        assert {key: resolved[key] for key in expected} == expected
        assert set(resolved) == set(method.defaults)


def test_macer_paper_command_differs_from_paper_only_in_lambda_at_sigma_one_half():
    """EXPERIMENTS.MD's training command says --lbd 6.0 at sigma 0.5; its certified checkpoint lies in lbd_4.0."""
    for sigma in (0.25, 0.5, 1.0):
        paper, command = MACER.hyperparameters(sigma, "paper"), MACER.hyperparameters(sigma, "paper-command")
        assert command == {**paper, "lbd": 6.0 if sigma == 0.5 else paper["lbd"]}
    assert MACER.hyperparameters(0.5, "paper")["lbd"] == 4.0


def test_quick_presets_only_shorten_epoch_schedules():
    for method, keys in ((SMOOTHADV, {"warmup"}), (SMOOTHMIX, {"warmup"}), (MACER, {"deferred"})):
        for sigma in (0.25, 0.5, 1.0):
            paper, quick = method.hyperparameters(sigma, "paper"), method.hyperparameters(sigma, "quick")
            unchanged = {k: v for k, v in paper.items() if k not in keys}
            assert {k: v for k, v in quick.items() if k not in keys} == unchanged
            for key in keys:
                assert (quick[key] is None) == (paper[key] is None)
                if paper[key] is not None:
                    assert 1 <= quick[key] < paper[key]


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid: beta, deferred, gamma, lbd, num_chunks, num_noise_vec"):
        MACER.hyperparameters(0.25, "paper", margin=8.0)
    with pytest.raises(ValueError, match="valid: paper, quick"):
        SMOOTHMIX.hyperparameters(0.25, "cifar")
    with pytest.raises(ValueError, match=r"sigma in \{0.25, 0.5, 1.0\}"):
        STABILITY.hyperparameters(0.3, "paper")


# ----------------------------------------------------------------------------- losses

def test_gaussian_is_cross_entropy_on_one_noisy_copy(setup):
    model, x, y, _ = setup
    batch = TrainBatch(x, y, None, 0.5, torch.Generator().manual_seed(7))
    loss = GAUSSIAN.compute_loss(model, batch, {})
    noise = drawn(torch.Generator().manual_seed(7), x.shape, 0.5)
    w, b = params(model)
    assert loss.item() == pytest.approx(mean_xent(w, b, x.numpy(), y.numpy(), [noise]), rel=1e-10)


def test_stability(setup):
    model, x, y, noises = setup
    xn, yn, d = x.numpy(), y.numpy(), noises[0].numpy()

    def formula(w, b):
        clean, noisy = np_logits(w, b, xn), np_logits(w, b, xn + d)
        xent = -np_log_softmax(clean)[np.arange(B), yn].mean()
        cross = -(np_softmax(clean) * np_log_softmax(noisy)).sum(axis=1).mean()
        return xent + 2.0 * cross

    def loss():
        return stability_loss(model, x, y, noises[0], lbd=2.0)

    assert loss().item() == pytest.approx(formula(*params(model)), rel=1e-10)
    check_gradient(model, loss, formula)  # the clean prediction is a target *and* gets gradient


def test_consistency(setup):
    model, x, y, noises = setup
    xn, yn, dn = x.numpy(), y.numpy(), noises.numpy()

    def formula(w, b):
        total = 0.0
        for k in range(B):
            probs = [np_softmax(np_logits(w, b, (xn[k] + d[k])[None]))[0] for d in dn]
            p_bar = np.mean(probs, axis=0)
            kl = np.mean([np.sum(p_bar * (np.log(p_bar) - np.log(p))) for p in probs])
            entropy = -np.sum(p_bar * np.log(p_bar))
            total += 20.0 * kl + 0.5 * entropy
        return mean_xent(w, b, xn, yn, dn) + total / B

    def loss():
        return consistency_loss(model, x, y, noises, lbd=20.0, eta=0.5)

    assert loss().item() == pytest.approx(formula(*params(model)), rel=1e-10)
    check_gradient(model, loss, formula)  # the mean prediction is not detached


def macer_formula(w, b, x, y, noises, sigma, lbd, beta, gamma):
    """MACER in numpy; also returns which examples fall inside the hinge."""
    classification, robustness, inside = 0.0, 0.0, []
    for k in range(len(x)):
        logits = [np_logits(w, b, (x[k] + d[k])[None])[0] for d in noises]
        p_bar = np.mean([np_softmax(z) for z in logits], axis=0)
        classification += -np.log(p_bar[y[k]] + 1e-10)
        q_bar = np.mean([np_softmax(beta * z) for z in logits], axis=0)
        first, second = np.argsort(-q_bar)[:2]
        gap = norm.ppf(q_bar[second]) - norm.ppf(q_bar[first])
        keep = bool(first == y[k] and np.isfinite(gap) and abs(gap) <= gamma)
        inside.append(keep)
        if keep:
            robustness += sigma / 2 * (gamma + gap)
    return (classification + lbd * robustness) / len(x), inside


def test_macer(setup):
    model, x, y, noises = setup
    xn, yn, dn = x.numpy(), y.numpy(), noises.numpy()
    hp = dict(lbd=3.0, beta=2.0, gamma=0.8)
    expected, inside = macer_formula(*params(model), xn, yn, dn, 0.25, **hp)
    assert any(inside) and not all(inside), "the fixture must exercise both sides of the hinge"

    def loss():
        return macer_loss(model, x, y, noises, 0.25, **hp)

    assert loss().item() == pytest.approx(expected, rel=1e-10)
    check_gradient(model, loss, lambda w, b: macer_formula(w, b, xn, yn, dn, 0.25, **hp)[0])
    no_robustness, _ = macer_formula(*params(model), xn, yn, dn, 0.25, lbd=0.0, beta=2.0, gamma=0.8)
    assert macer_loss(model, x, y, noises, 0.25, lbd=0.0, beta=2.0, gamma=0.8).item() == pytest.approx(no_robustness)


def smoothadv_points(w, b, x, y, noises, epsilon, steps):
    delta = np.zeros_like(x)
    for _ in range(steps):
        grad = smoothed_nll_grad(w, b, x + delta, y, noises)
        for k in range(len(x)):
            step = delta[k] + 2 * epsilon / steps * grad[k] / np.linalg.norm(grad[k])
            step = np.clip(x[k] + step, 0, 1) - x[k]
            delta[k] = renorm(step, epsilon)
    return x + delta


def test_smoothadv(setup):
    model, x, y, noises = setup
    w, b = params(model)
    xn, yn, dn = x.numpy(), y.numpy(), noises.numpy()
    expected_points = smoothadv_points(w, b, xn, yn, dn, epsilon=0.5, steps=3)

    points = smoothadv_attack(model, x, y, noises, 0.5, 3)
    np.testing.assert_allclose(points.numpy(), expected_points, rtol=1e-6, atol=1e-6)
    norms = np.linalg.norm((points - x).flatten(1).numpy(), axis=1)
    assert np.all(norms <= 0.5 + 1e-6) and np.any(norms > 0.4)
    assert model.training and all(p.requires_grad for p in model.parameters())

    loss = smoothadv_loss(model, x, y, noises, epsilon=0.5, num_steps=3)
    assert loss.item() == pytest.approx(mean_xent(w, b, expected_points, yn, dn), rel=1e-6)


def test_smoothadv_warmup_and_chunking(setup):
    model, x, y, _ = setup
    hp = SMOOTHADV.hyperparameters(0.25, "paper", num_noise_vec=2, num_steps=2)
    w, b = params(model)
    for epoch, radius in ((0, 0.1), (4, 0.5), (30, 1.0)):  # warm-up over 10 epochs to epsilon = 1.0
        batch = TrainBatch(x, y, None, 0.25, torch.Generator().manual_seed(1), epoch)
        loss = SMOOTHADV.compute_loss(model, batch, hp)
        noises = drawn(torch.Generator().manual_seed(1), (2, *x.shape), 0.25)
        points = smoothadv_points(w, b, x.numpy(), y.numpy(), noises, epsilon=radius, steps=2)
        assert loss.item() == pytest.approx(mean_xent(w, b, points, y.numpy(), noises), rel=1e-6)
    assert SMOOTHADV.chunks == "num_noise_vec"


def smoothmix_points(w, b, x, y, noises, step_size, steps, mix_step, maxnorm_s):
    adversarial, start = x.copy(), x.copy()
    for t in range(steps):
        if t == mix_step:
            start = adversarial.copy()
        grad = smoothed_nll_grad(w, b, adversarial, y, noises)
        for k in range(len(x)):
            adversarial[k] = np.clip(adversarial[k] + step_size * grad[k] / (np.linalg.norm(grad[k]) + 1e-8), 0, 1)
    clean = np.stack([np.clip(x[k] + renorm(start[k] - x[k], maxnorm_s), 0, 1) for k in range(len(x))])
    return clean, adversarial


def smoothmix_formula(w, b, clean, adversarial, y, noises, lam, eta):
    classes = len(b)
    xent = mean_xent(w, b, clean, y, noises)
    mixup = 0.0
    for k in range(len(y)):
        p_bar = np.mean([np_softmax(np_logits(w, b, (clean[k] + d[k])[None]))[0] for d in noises], axis=0)
        target = (1 - lam[k]) * p_bar + lam[k] / classes
        mixed = (1 - lam[k]) * clean[k] + lam[k] * adversarial[k]
        if np.argmax(p_bar) == y[k]:
            for d in noises:
                log_q = np_log_softmax(np_logits(w, b, (mixed + d[k])[None]))[0]
                mixup += np.sum(target * (np.log(target) - log_q))
    return xent + eta * mixup / (len(noises) * len(y))


@pytest.mark.parametrize("mix_step", [0, 1])
def test_smoothmix(setup, mix_step):
    model, x, y, noises = setup
    w, b = params(model)
    xn, yn, dn = x.numpy(), y.numpy(), noises.numpy()
    lam = torch.tensor([0.1, 0.45, 0.3, 0.2], dtype=x.dtype)
    clean_np, adv_np = smoothmix_points(w, b, xn, yn, dn, step_size=0.4, steps=3, mix_step=mix_step, maxnorm_s=0.3)

    clean, adversarial = smoothmix_attack(model, x, y, noises, step_size=0.4, num_steps=3, mix_step=mix_step,
                                          maxnorm_s=0.3)
    np.testing.assert_allclose(clean.numpy(), clean_np, atol=1e-6)
    np.testing.assert_allclose(adversarial.numpy(), adv_np, atol=1e-6)
    assert (clean.numpy() == xn).all() == (mix_step == 0)
    correct = [np.argmax(np.mean([np_softmax(np_logits(w, b, (clean_np[k] + d[k])[None]))[0] for d in dn], axis=0))
               == yn[k] for k in range(B)]
    assert any(correct) and not all(correct), "the fixture must exercise both sides of the indicator"

    def loss():
        return smoothmix_loss(model, x, y, noises, lam, step_size=0.4, num_steps=3, mix_step=mix_step, eta=5.0,
                              maxnorm_s=0.3)

    assert loss().item() == pytest.approx(smoothmix_formula(w, b, clean_np, adv_np, yn, dn, lam.numpy(), 5.0), rel=1e-6)
    # Gradient at fixed attack points: the mean clean prediction inside the target is not detached.
    check_gradient(model, loss, lambda w_, b_: smoothmix_formula(w_, b_, clean_np, adv_np, yn, dn, lam.numpy(), 5.0),
                   rtol=1e-4)


def test_smoothmix_method_draws_noise_then_mixing_weights_and_warms_up(setup):
    model, x, y, _ = setup
    hp = SMOOTHMIX.hyperparameters(0.5, "paper", num_steps=2)  # step 1.0, mix_step 1, eta 5, warm-up 10 epochs
    batch = TrainBatch(x, y, None, 0.5, torch.Generator().manual_seed(5), epoch=1)
    loss = SMOOTHMIX.compute_loss(model, batch, hp)

    g = torch.Generator().manual_seed(5)
    noises = drawn(g, (2, *x.shape), 0.5)
    lam = (torch.rand(B, generator=g, dtype=torch.float32) / 2).double().numpy()
    w, b = params(model)
    factor = 2 / 10  # (epoch + 1) / warmup
    clean, adversarial = smoothmix_points(w, b, x.numpy(), y.numpy(), noises, 1.0, 2, 1, maxnorm_s=1.0 * factor)
    expected = smoothmix_formula(w, b, clean, adversarial, y.numpy(), noises, lam, 5.0 * factor)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_macer_deferral_and_generator_noise(setup):
    model, x, y, _ = setup
    hp = MACER.hyperparameters(1.0, "paper", num_noise_vec=3, beta=2.0, gamma=0.8)  # deferred until epoch 50
    w, b = params(model)
    for epoch, lbd in ((50, 0.0), (51, 12.0)):
        batch = TrainBatch(x, y, None, 1.0, torch.Generator().manual_seed(2), epoch)
        noises = drawn(torch.Generator().manual_seed(2), (3, *x.shape), 1.0)
        expected, _ = macer_formula(w, b, x.numpy(), y.numpy(), noises, 1.0, lbd, 2.0, 0.8)
        assert MACER.compute_loss(model, batch, hp).item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_same_seed_same_loss(setup, method):
    model, x, y, _ = setup
    method = METHODS[method]
    hp = method.hyperparameters(0.25, "paper")
    values = [method.compute_loss(model, TrainBatch(x, y, None, 0.25, torch.Generator().manual_seed(9), 3), hp).item()
              for _ in range(2)]
    assert values[0] == values[1]
    other = method.compute_loss(model, TrainBatch(x, y, None, 0.25, torch.Generator().manual_seed(10), 3), hp).item()
    assert other != values[0]


# ----------------------------------------------------------------------------- ART 1.20

class _InOrder(torch.utils.data.DataLoader):
    """ART's ``fit`` shuffles with its own loader; in order, its noise can be matched to examples."""

    def __init__(self, *args, **kwargs):
        kwargs["shuffle"] = False
        super().__init__(*args, **kwargs)


def test_art_macer_step_equals_a_step_on_our_loss(setup, monkeypatch):
    from art.estimators.certification.randomized_smoothing import PyTorchMACER

    model, x, y, _ = setup
    model = model.float()
    x = x.float()
    seen = []
    model.register_forward_hook(lambda module, args, out: seen.append(args[0].detach().clone()))
    monkeypatch.setattr(torch.utils.data, "DataLoader", _InOrder)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    estimator = PyTorchMACER(model, nn.CrossEntropyLoss(), SHAPE, C, optimizer=optimizer, device_type="cpu", scale=0.25,
                             beta=2.0, gamma=0.8, lmbda=3.0, gaussian_samples=M)
    torch.manual_seed(0)
    estimator.fit(x.numpy(), y.numpy(), batch_size=B, nb_epochs=1)
    art_step = [after.detach() - b for after, b in zip(model.parameters(), before)]

    # ART lays the noisy copies out example by example; ours are noise by noise.
    noises = (seen[0].view(B, M, *SHAPE) - x.unsqueeze(1)).transpose(0, 1)
    with torch.no_grad():
        for p, b in zip(model.parameters(), before):
            p.copy_(b)
    model.zero_grad()
    macer_loss(model, x, y, noises, 0.25, lbd=3.0, beta=2.0, gamma=0.8).backward()
    for step, p in zip(art_step, model.parameters()):
        torch.testing.assert_close(step, -p.grad, rtol=1e-4, atol=1e-6)


def test_art_smoothmix_attack_matches_ours_only_with_alpha_set_to_the_step_size(setup):
    from art.estimators.certification.randomized_smoothing import PyTorchSmoothMix

    model, x, y, noises = setup
    model, x, noises = model.float(), x.float(), noises.float()

    def art_attack(alpha):
        estimator = PyTorchSmoothMix(model, nn.CrossEntropyLoss(), SHAPE, C, device_type="cpu", scale=0.25, alpha=alpha,
                                     num_steps=3, mix_step=1)
        return estimator._smooth_mix_pgd_attack(x, y, list(noises), warmup_v=0.5)

    ours = smoothmix_attack(model, x, y, noises, step_size=0.4, num_steps=3, mix_step=1, maxnorm_s=0.4 * 0.5)
    for art_points, our_points in zip(art_attack(0.4), ours):
        torch.testing.assert_close(art_points, our_points)
    _, art_default = art_attack(0.001)  # ART's default alpha is the certification failure probability
    assert (art_default - x).flatten(1).norm(dim=1).max() < 0.01 < (ours[1] - x).flatten(1).norm(dim=1).min()
