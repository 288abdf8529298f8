"""Empirical robustness of a smoothed classifier under ART's L2 PGD, next to its certificates.

Per example, ART's :class:`~art.attacks.evasion.ProjectedGradientDescent` (L2 norm, radius
``eps``, ``steps`` iterations of step ``2.5 * eps / steps``, the true label, no random start)
attacks the *smoothed* classifier: the gradient is that of :class:`PyTorchCATRS`'s
``loss_gradient``, ``-log mean_i softmax(f(x + d_i))_y`` over ``attack_samples`` Gaussian
noises (the smoothed soft classifier of Salman et al. 2019). Cohen et al.'s PREDICT with ``n``
samples then labels the adversarial example; an abstention counts as an error.

Why the two columns can be compared: an example certified at radius ``R >= eps`` keeps the
smoothed classifier's label on the whole ball of radius ``eps`` (with probability at least
``1 - alpha``), so the attack cannot change it, and certified accuracy at ``r`` can exceed
empirical accuracy at ``eps = r`` only through sampling: PREDICT's own errors and abstentions
near the edge of a certified ball, and the certificates' failure probability.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from catrs_plugin.certify.files import predict_to_file
from catrs_plugin.certify.smoothing import evaluating, model_device
from catrs_plugin.plugins.specs import AttackSpec
from catrs_plugin.utils import locking, provenance, streams
from catrs_plugin.utils.atomic import save_npy_atomic
from catrs_plugin.utils.reading import load_npy

#: Examples per PGD batch (each takes ``attack_samples`` noisy forward passes per step).
ATTACK_BATCH = 32


def pgd_examples(
    model: nn.Module,
    num_classes: int,
    input_shape: Sequence[int],
    sigma: float,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    *,
    steps: int = 10,
    attack_samples: int = 32,
    seed: int = 0,
    progress: bool = False,
) -> np.ndarray:
    """ART L2 PGD examples against the smoothed soft classifier of ``model`` at noise level ``sigma``.

    The gradient noise comes from the global generator, seeded from ``(seed, eps)`` in the stream
    domain :data:`~catrs_plugin.utils.streams.ATTACK` inside a forked random state, so the examples are reproducible and the caller's state is untouched.

    Returns
    -------
    numpy.ndarray
        Adversarial inputs, float32, shape of ``x``, within ``eps`` (L2) of ``x`` and in [0, 1].
    """
    from art.attacks.evasion import ProjectedGradientDescent

    from catrs_adapters.art.estimator import PyTorchCATRS

    device = model_device(model)
    estimator = PyTorchCATRS(
        model, nn.CrossEntropyLoss(), tuple(input_shape), num_classes, clip_values=(0.0, 1.0),
        device_type="gpu" if device.type == "cuda" else "cpu", sample_size=attack_samples, scale=sigma, seed=seed,
    )
    attack = ProjectedGradientDescent(
        estimator, norm=2, eps=eps, eps_step=2.5 * eps / steps, max_iter=steps, targeted=False, num_random_init=0,
        batch_size=ATTACK_BATCH, verbose=progress,
    )
    with evaluating(model), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(streams.derive_seed(streams.ATTACK, seed, int(round(eps * 1e6))))
        return attack.generate(np.asarray(x, dtype=np.float32), y=np.asarray(y, dtype=np.int64)).astype(np.float32)


@locking.holding(lambda arguments: arguments["outfile"], "attack results")
def attack_to_file(
    model: nn.Module,
    num_classes: int,
    input_shape: Sequence[int],
    sigma: float,
    x: np.ndarray,
    y: np.ndarray,
    indices: Sequence[int] | np.ndarray,
    eps: float,
    outfile: str | os.PathLike,
    *,
    steps: int = 10,
    attack_samples: int = 32,
    n: int = 100_000,
    alpha: float = 0.001,
    batch_size: int | str = "auto",
    seed: int = 0,
    progress: bool = False,
) -> int:
    """Attack ``x[indices]`` at ``eps`` and PREDICT on the results, resumably.

    Writes ``outfile`` (Cohen-format PREDICT rows ``idx label predict correct time``, resumed
    row by row) and, next to it with the suffix ``.npy``, the adversarial examples (computed
    once). Each example's PREDICT noise is seeded by its index, as in certification. Both
    record what produced them (:mod:`catrs_plugin.utils.provenance`) and are only reused by the same
    model, data, examples and attack settings. Both are locked while the call writes them
    (:mod:`catrs_plugin.utils.locking`): a second writer is refused.

    Returns
    -------
    int
        PREDICT rows written by this call.
    """
    outfile = Path(outfile)
    indices = np.asarray(indices, dtype=np.int64)
    examples = outfile.with_name(outfile.stem + ".npy")
    settings = {"command": "art_l2_pgd", "model": provenance.weights_digest(model),
                "data": provenance.data_identity(x, y),
                "indices": provenance.indices_record(indices), "sigma": float(sigma), "eps": float(eps),
                "steps": steps, "attack_samples": attack_samples, "seed": seed}
    if provenance.reuse(examples, settings, what="adversarial examples"):
        adversarial = load_npy(examples, "adversarial examples")
    else:
        adversarial = pgd_examples(model, num_classes, input_shape, sigma, x[indices], y[indices], eps, steps=steps,
                                   attack_samples=attack_samples, seed=seed, progress=progress)
        provenance.save(examples, settings, lambda path: save_npy_atomic(path, adversarial))
    attacked = np.array(x, dtype=np.float32, copy=True)
    attacked[indices] = adversarial
    return predict_to_file(model, num_classes, sigma, attacked, y, outfile, indices, n=n, alpha=alpha,
                           batch_size=batch_size, seed=seed, progress=progress, settings={"model": settings["model"]})


#: Registered as ``art_l2_pgd`` (see :mod:`catrs_adapters.builtins`); ``catrs compare --attack-eps`` runs it.
ART_L2_PGD = AttackSpec(
    "art_l2_pgd", attack_to_file, "ART's L2 ProjectedGradientDescent on the smoothed soft classifier, then PREDICT"
)
