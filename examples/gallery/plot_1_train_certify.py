"""
Train and certify in a few lines
================================

Train the digits CNN with Gaussian noise augmentation (Cohen et al., 2019), then certify
its smoothed classifier with CERTIFY: each test digit gets a prediction and an L2 radius
within which that prediction provably does not change (with probability ``1 - alpha``
over the noise). The budgets are tiny so that this runs in seconds on a CPU;
``catrs demo`` and :doc:`../guides/compare` use the paper's.
"""

# %%
# Train
# -----
# :meth:`~catrs_plugin.plugins.registry.Registry.create_model` puts the dataset's
# normalisation inside the model, so the model takes pixels in [0, 1] and the noise is
# added to the pixels.

from catrs_adapters.datasets import load_digits

from catrs_plugin import GAUSSIAN, Smooth, TensorData, TrainConfig, get_registry, train

x_train, y_train = load_digits("train")
x_test, y_test = load_digits("test", n_examples=100)
model = get_registry().create_model("digits_cnn", "digits")

sigma = 0.25
config = TrainConfig(epochs=10, batch_size=64, lr=0.1, lr_step_size=10, progress=False)
history = train(model, GAUSSIAN, GAUSSIAN.hyperparameters(sigma=sigma), sigma,
                TensorData(x_train, y_train), config)
print(f"loss {history[0]['loss']:.3f} -> {history[-1]['loss']:.3f}")

# %%
# Certify
# -------
# CERTIFY selects the top class from ``n0`` noisy samples, then bounds its probability
# from ``n`` fresh ones (an exact Clopper-Pearson bound). Below 1/2 it abstains (-1).

from catrs_plugin import average_certified_radius, certified_accuracy

model.eval()
smooth = Smooth(model, num_classes=10, sigma=sigma, seed=0)
predictions, radii = smooth.certify(x_test, n0=100, n=1000, alpha=0.001)
correct = predictions == y_test
print(f"abstained on {(predictions == -1).sum()} of {len(x_test)} digits")
print(f"ACR {average_certified_radius(radii, correct):.3f}")
for radius in [0.0, 0.25, 0.5]:
    accuracy = certified_accuracy(radii, correct, [radius])[0]
    print(f"certified accuracy at radius {radius}: {accuracy:.0%}")

# %%
# Certified accuracy against radius
# ---------------------------------
# The fraction of test digits classified correctly *and* certified at least at each
# radius. ``n`` caps every radius, however confident the model: with all ``n`` samples on
# the top class the bound is ``alpha ** (1 / n)``, so larger radii need more samples.

import matplotlib.pyplot as plt
import numpy as np

from catrs_plugin import certified_radius, lower_confidence_bound

cap = float(certified_radius(lower_confidence_bound(1000, 1000, 0.001), sigma))
print(f"largest radius N = 1000 can certify at sigma {sigma}: {cap:.3f}")

grid = np.linspace(0, 0.8, 81)
accuracy = 100 * certified_accuracy(radii, correct, grid)
plt.plot(grid, accuracy, label=f"Gaussian, sigma = {sigma}")
plt.axvline(cap, color="grey", linestyle=":", label="largest radius at N = 1000")
plt.xlabel("L2 radius")
plt.ylabel("certified accuracy (%)")
plt.title(f"{len(x_test)} test digits, N = 1000, alpha = 0.001")
plt.legend()
plt.show()
