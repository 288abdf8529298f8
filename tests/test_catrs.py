"""The CAT-RS objective, piece by piece, against the formulas of DESIGN.md section 3."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from catrs_plugin.methods.base import TrainBatch
from catrs_plugin.methods.catrs import CATRS, catrs_loss, match_moments, project_l2, worst_case_noise

M, B, C = 4, 6, 3


class Tiny(nn.Module):
    """A small classifier with batch norm, so that train and eval mode differ."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, C))

    def forward(self, x):
        return self.net(x)


class Constant(nn.Module):
    """Always predicts ``label`` with high confidence, whatever the input (plus a weak input term)."""

    def __init__(self, label):
        super().__init__()
        self.label = label
        self.linear = nn.Linear(8, C)

    def forward(self, x):
        out = 0.1 * self.linear(x.flatten(1))
        return out + 10.0 * F.one_hot(torch.full((len(x),), self.label), C).float()


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    inputs = torch.rand(B, 2, 2, 2, generator=g)
    targets = torch.randint(0, C, (B,), generator=g)
    soft = torch.softmax(torch.randn(B, C, generator=g) * 2, dim=1)
    noises = torch.randn(M, B, 2, 2, 2, generator=g) * 0.5
    return inputs, targets, soft, noises


def reference_style_loss(model, inputs, targets, soft, noises, epsilon, steps, lbd, seed, confidence_mask=False):
    """An independent, list-of-noises rendering of DESIGN.md section 3 (not sharing our helpers)."""
    m = len(noises)
    logits0 = model(torch.cat([inputs + d for d in noises])).chunk(m)
    if confidence_mask:
        p_hat = soft[torch.arange(len(targets)), targets]
    else:
        p_hat = sum(F.one_hot(l.argmax(1), C).float() for l in logits0)[torch.arange(len(targets)), targets] / m
    k = torch.binomial(torch.full_like(p_hat, m), p_hat, generator=torch.Generator().manual_seed(seed)).long().clamp(min=1)
    xent = torch.stack([F.cross_entropy(l, targets, reduction="none") for l in logits0], dim=1).sort(dim=1).values
    tril = torch.ones(m + 1, m).tril(-1)
    low = (xent * tril[k]).mean(1)

    model.eval()
    flat0 = torch.cat(list(noises)).flatten(1)
    noise = flat0.clone()
    mu0, rms0 = flat0.mean(1, keepdim=True), flat0.pow(2).mean(1, keepdim=True).sqrt()
    x_rep = inputs.repeat(m, 1, 1, 1)
    for _ in range(steps):
        noise.requires_grad_(True)
        out = model(x_rep + noise.view_as(x_rep))
        kls = [F.kl_div(F.log_softmax(o, 1), soft, reduction="none").sum(1) for o in out.chunk(m)]
        grad = torch.autograd.grad((sum(kls) / m).sum(), noise)[0]
        grad = grad / (grad.norm(dim=1, keepdim=True) + 1e-8)
        noise = noise.detach() + 2 * epsilon / steps * grad
        eta = noise - flat0
        norms = eta.norm(dim=1, keepdim=True)
        eta = torch.where(norms > epsilon, eta * epsilon / (norms + 1e-7), eta)
        noise = flat0 + eta
        mu, rms = noise.mean(1, keepdim=True), noise.pow(2).mean(1, keepdim=True).sqrt()
        noise = (noise - mu) / rms * rms0 + mu0
    model.train()
    worst = noise.detach().view_as(noises)
    logits = model(torch.cat([inputs + d for d in worst])).chunk(m)
    kl = torch.stack([F.kl_div(F.log_softmax(o, 1), soft, reduction="none").sum(1) for o in logits], 1)
    high = kl.max(1).values
    return (low + lbd * high * (k == m)).mean()


@pytest.mark.parametrize("confidence_mask", [False, True])
def test_loss_matches_an_independent_rendering_of_the_objective(data, confidence_mask):
    inputs, targets, soft, noises = data
    torch.manual_seed(0)
    model = Tiny().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ours = catrs_loss(model, inputs, targets, soft, noises, epsilon=0.5, num_steps=3, lbd=1.5,
                      confidence_mask=confidence_mask, generator=torch.Generator().manual_seed(5))
    model.load_state_dict(state)  # batch-norm running statistics moved; start again from the same state
    theirs = reference_style_loss(model, inputs, targets, soft, noises, 0.5, 3, 1.5, seed=5,
                                  confidence_mask=confidence_mask)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5, abs=1e-6)


def test_lambda_zero_gives_the_bottom_k_loss_alone(data):
    inputs, targets, soft, noises = data
    model = Constant(label=0)
    targets = torch.zeros(B, dtype=torch.long)  # always right: p_hat = 1, so K = M
    loss = catrs_loss(model, inputs, targets, soft, noises, lbd=0.0, generator=torch.Generator().manual_seed(0))
    xent = torch.stack([F.cross_entropy(model(inputs + d), targets, reduction="none") for d in noises])
    assert loss.item() == pytest.approx(xent.mean().item(), rel=1e-6)


def test_k_equal_to_m_makes_the_high_term_count(data):
    inputs, _, soft, noises = data
    model = Constant(label=1)
    targets = torch.ones(B, dtype=torch.long)
    base = catrs_loss(model, inputs, targets, soft, noises, lbd=0.0, generator=torch.Generator().manual_seed(0))
    with_high = catrs_loss(model, inputs, targets, soft, noises, lbd=2.0, generator=torch.Generator().manual_seed(0))
    worst = worst_case_noise(model, inputs, soft, noises, epsilon=1.0, num_steps=4)
    kl = torch.stack([F.kl_div(F.log_softmax(model(inputs + d), 1), soft, reduction="none").sum(1) for d in worst])
    assert (with_high - base).item() == pytest.approx(2.0 * kl.max(0).values.mean().item(), rel=1e-5)


def test_low_confidence_uses_one_noise_divided_by_m_and_no_high_term(data):
    inputs, _, soft, noises = data
    model = Constant(label=2)
    targets = torch.zeros(B, dtype=torch.long)  # always wrong: p_hat = 0, K clamps to 1 < M
    loss = catrs_loss(model, inputs, targets, soft, noises, lbd=100.0, generator=torch.Generator().manual_seed(0))
    xent = torch.stack([F.cross_entropy(model(inputs + d), targets, reduction="none") for d in noises])
    assert loss.item() == pytest.approx((xent.min(0).values / M).mean().item(), rel=1e-6)


def test_confidence_mask_takes_p_hat_from_the_soft_label(data):
    inputs, _, _, noises = data
    model = Constant(label=2)  # the model is always wrong, but the soft label is sure of y
    targets = torch.zeros(B, dtype=torch.long)
    soft = F.one_hot(targets, C).float()
    masked = catrs_loss(model, inputs, targets, soft, noises, lbd=1.0, confidence_mask=True,
                        generator=torch.Generator().manual_seed(0))
    xent = torch.stack([F.cross_entropy(model(inputs + d), targets, reduction="none") for d in noises])
    assert masked.item() > xent.mean().item()  # all M cross-entropies (K = M) plus a positive KL term


def test_noise_search_increases_the_kl(data):
    inputs, targets, soft, noises = data
    torch.manual_seed(0)
    model = Tiny().eval()

    def mean_kl(ns):
        with torch.no_grad():
            return torch.stack([F.kl_div(F.log_softmax(model(inputs + d), 1), soft, reduction="none").sum(1)
                                for d in ns]).mean().item()

    worst = worst_case_noise(model, inputs, soft, noises, epsilon=0.5, num_steps=4)
    assert mean_kl(worst) > mean_kl(noises)


def test_search_keeps_moments_and_restores_the_model(data):
    inputs, _, soft, noises = data
    model = Tiny().train()
    model.net[1].weight.requires_grad_(False)
    worst = worst_case_noise(model, inputs, soft, noises, epsilon=0.5, num_steps=2)
    flat0, flat = noises.flatten(2), worst.flatten(2)
    torch.testing.assert_close(flat.mean(2), flat0.mean(2), atol=1e-5, rtol=1e-5)
    assert not torch.equal(worst, noises)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == [False, True, True, True, True, True]


def test_projection_stays_within_epsilon():
    delta = torch.randn(10, 50) * torch.linspace(0.01, 3, 10).unsqueeze(1)
    projected = project_l2(delta, 0.7)
    norms = projected.norm(dim=1)
    assert torch.all(norms <= 0.7 + 1e-5)
    small = delta.norm(dim=1) <= 0.7
    torch.testing.assert_close(projected[small], delta[small])


def test_match_moments_follows_the_reference_rescaling():
    noise = torch.randn(5, 40) * 3 + 1
    mean, rms = torch.full((5, 1), 0.2), torch.full((5, 1), 0.9)
    out = match_moments(noise, mean, rms)
    own_rms = noise.pow(2).mean(1, keepdim=True).sqrt()
    torch.testing.assert_close(out, (noise - noise.mean(1, keepdim=True)) / own_rms * rms + mean)
    torch.testing.assert_close(out.mean(1), torch.full((5,), 0.2), atol=1e-5, rtol=0)
    centred = noise - noise.mean(1, keepdim=True)  # zero-mean rows: the root-mean-square is matched too
    torch.testing.assert_close(match_moments(centred, torch.zeros(5, 1), rms).pow(2).mean(1).sqrt(),
                               torch.full((5,), 0.9), atol=1e-4, rtol=0)


def test_method_doubles_epsilon_after_warmup(data, monkeypatch):
    inputs, targets, soft, _ = data
    seen = []
    monkeypatch.setattr("catrs_plugin.methods.catrs.catrs_loss", lambda *a, **k: seen.append(k["epsilon"]) or torch.zeros(()))
    params = CATRS.hyperparameters(0.25, "paper", warmup=3)
    for epoch in (2, 3):
        batch = TrainBatch(inputs, targets, soft, 0.25, torch.Generator().manual_seed(0), epoch)
        CATRS.compute_loss(Tiny(), batch, params)
    assert seen == [1.0, 2.0]


def test_presets_and_unknown_names():
    assert CATRS.hyperparameters(0.25, "paper")["lbd"] == 0.5
    assert CATRS.hyperparameters(1.0, "paper")["lbd"] == 2.0
    assert CATRS.hyperparameters(1.0, "imagenet")["confidence_mask"] is True
    with pytest.raises(ValueError, match="valid: .*lbd"):
        CATRS.hyperparameters(0.25, None, lambda_=1.0)
    with pytest.raises(ValueError, match="valid: imagenet, mnist, paper"):
        CATRS.hyperparameters(0.25, "fast")
    with pytest.raises(ValueError, match=r"preset 'mnist' of method 'catrs' is defined for sigma in \{0.25\}"):
        CATRS.hyperparameters(0.5, "mnist")  # no released MNIST run records lambda at 0.5
    with pytest.raises(ValueError, match="sigma"):
        CATRS.hyperparameters(0.3, "paper")


def test_missing_soft_labels_say_how_to_get_them(data):
    inputs, targets, _, _ = data
    batch = TrainBatch(inputs, targets, None, 0.25, torch.Generator(), 0)
    with pytest.raises(ValueError, match="smoothed_soft_labels"):
        CATRS.compute_loss(Tiny(), batch, CATRS.hyperparameters())
