"""
Compare two methods
===================

:func:`~catrs_plugin.compare.run.run_comparison` (the engine of ``catrs compare``) trains
Gaussian augmentation and CAT-RS from the same initialisation, with the same data order,
noise seeds and budget, certifies both on the same test digits with the same noise, and
writes the paper-style table. CAT-RS needs soft labels from a Gaussian teacher at
sigma = 0.25: here the teacher *is* the Gaussian run, trained once and reused.

The budget is tiny (4 epochs, N = 500) so that this runs in under a minute: the numbers
show the mechanics, not the paper's results. :doc:`../guides/compare` has the table of all
seven methods at the ``quick`` budget (40 epochs, N = 10,000).
"""

import tempfile
from pathlib import Path

from catrs_plugin import get_registry
from catrs_plugin.compare.plan import Budget
from catrs_plugin.compare.run import run_comparison

registry = get_registry()
methods = [registry.method("gaussian"), registry.method("catrs")]
budget = Budget(epochs=4, batch_size=64, lr=0.1, lr_step_size=4, soft_samples=100,
                n0=50, n=500, alpha=0.001, skip=3)
workdir = tempfile.TemporaryDirectory()
output = Path(workdir.name)
comparisons = run_comparison("digits", methods, 0.25, output, budget=budget, log=print)

# %%
# The table
# ---------
# ``summary.md`` (and ``summary.csv``; per noise level also ``summary.json``) in the
# output folder. Rerunning the same call resumes from the files written so far.

print((output / "summary.md").read_text())

# %%
# Certified accuracy against radius
# ---------------------------------
# Each run's Cohen-format TSV holds one CERTIFY row per test digit.

import matplotlib.pyplot as plt

from catrs_plugin import read_certify_results
from catrs_plugin.results.plots import certified_accuracy_curve

for outcome in comparisons[0].outcomes:
    results = read_certify_results(outcome.summary["certify_path"])
    radii, accuracy = certified_accuracy_curve(results, max_radius=0.6)
    plt.plot(radii, 100 * accuracy, label=outcome.name)
plt.xlabel("L2 radius")
plt.ylabel("certified accuracy (%)")
plt.title(f"digits, sigma = 0.25, N = {budget.n}, alpha = {budget.alpha}")
plt.legend()
plt.show()
workdir.cleanup()
