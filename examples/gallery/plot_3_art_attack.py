"""
An ART attack against a smoothed model
======================================

:class:`~catrs_adapters.art.estimator.PyTorchCATRS` is an ART estimator (a subclass of
ART's ``PyTorchRandomizedSmoothing``), so ART's evasion attacks run on it unchanged. They
attack the *smoothed soft classifier*, the average softmax over Gaussian noise (Salman et
al., 2019), whose gradients the estimator provides. After ``pip install``,
``from art.estimators.certification.randomized_smoothing import PyTorchCATRS`` gives the
same class; ``from catrs_plugin import PyTorchCATRS`` works however it was installed.

Here ART's L2 PGD moves 20 test digits by at most 0.5, and CERTIFY's radii say in advance
which of them no attack of that size can flip.
"""

import numpy as np
import torch
from art.attacks.evasion import ProjectedGradientDescent
from catrs_adapters.datasets import load_digits

from catrs_plugin import PyTorchCATRS, get_registry

x_train, y_train = load_digits("train")
x_test, y_test = load_digits("test", n_examples=20)
torch.manual_seed(0)
model = get_registry().create_model("digits_cnn", "digits")
smoothed = PyTorchCATRS(model, torch.nn.CrossEntropyLoss(), input_shape=(1, 8, 8),
                        nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu",
                        sample_size=100, scale=0.25, method="gaussian")
smoothed.fit(x_train, y_train, nb_epochs=8, batch_size=64, lr=0.1)

# %%
# Attack
# ------
# Each PGD step follows the gradient of the soft classifier's loss, estimated from
# ``sample_size`` noisy copies of every input.

eps = 0.5
attack = ProjectedGradientDescent(smoothed, norm=2, eps=eps, eps_step=0.125, max_iter=10,
                                  verbose=False)
x_adv = attack.generate(x_test, y=y_test)
moved = np.linalg.norm((x_adv - x_test).reshape(len(x_test), -1), axis=1)
print(f"largest L2 distance moved: {moved.max():.3f}")


def predict(x):
    """Cohen's PREDICT as class indices, -1 where it abstains (an all-zero row)."""
    rows = smoothed.predict(x)
    return np.where(rows.sum(axis=1) == 1, rows.argmax(axis=1), -1)


clean, attacked = predict(x_test), predict(x_adv)
print(f"PREDICT accuracy: {np.mean(clean == y_test):.0%} clean, "
      f"{np.mean(attacked == y_test):.0%} attacked")

# %%
# What the certificates promise
# -----------------------------
# CERTIFY on the clean digits: where the radius exceeds ``eps``, no perturbation of L2
# norm ``eps`` changes the smoothed classifier's class (with probability ``1 - alpha``
# over CERTIFY's noise), whatever the attack. PREDICT may still abstain on such a digit.

certified, radius = smoothed.certify(x_test, n=1000)
safe = (certified == y_test) & (radius > eps)
flipped = safe & (attacked >= 0) & (attacked != y_test)
print(f"{safe.sum()} of {len(x_test)} digits certified correct beyond radius {eps}")
print(f"the attack gave {flipped.sum()} of them another class")

# %%
# Four certified digits (left) and four others (right), before and after the attack.

import matplotlib.pyplot as plt

shown = np.concatenate([np.flatnonzero(safe)[:4], np.flatnonzero(~safe)[:4]])
fig, axes = plt.subplots(2, len(shown), figsize=(8, 2.8), squeeze=False)
for column, i in enumerate(shown):
    for row, (images, labels) in enumerate([(x_test, clean), (x_adv, attacked)]):
        title = f"{labels[i]}" + (f" r={radius[i]:.2f}" if row == 0 else "")
        axes[row, column].imshow(images[i, 0], cmap="gray_r", vmin=0, vmax=1)
        axes[row, column].set_title(title, fontsize=8)
        axes[row, column].axis("off")
fig.suptitle(f"top: clean, PREDICT and certified radius r; bottom: L2 PGD, eps = {eps}",
             fontsize=9)
plt.show()
