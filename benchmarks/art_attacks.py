"""ART's evasion attacks against PyTorchCATRS on the embedded digits data: what each does to the smoothed classifier.

Trains the digits CNN with Gaussian noise (sigma 0.25) through ``PyTorchCATRS.fit``, then runs
each attack that the estimator supports on the first ``--examples`` test digits and prints, per
attack, the seconds it took, the mean L2 and largest Linf distance it moved, the accuracy of
the smoothed soft classifier (argmax of ``soft_logits``) and of Cohen's PREDICT (abstentions
count as errors) on its examples::

    python benchmarks/art_attacks.py [--examples 16] [--epochs 8]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from art.attacks import evasion

from catrs_adapters.art.estimator import PyTorchCATRS
from catrs_adapters.datasets import DIGITS, load_digits
from catrs_plugin.plugins.registry import get_registry

ATTACKS = {
    "FGM L2 eps 0.5": lambda e, n: evasion.FastGradientMethod(e, norm=2, eps=0.5, batch_size=n),
    "FGM Linf eps 0.1": lambda e, n: evasion.FastGradientMethod(e, norm=np.inf, eps=0.1, batch_size=n),
    "PGD L2 eps 0.5": lambda e, n: evasion.ProjectedGradientDescent(e, norm=2, eps=0.5, eps_step=0.125, max_iter=10,
                                                                    batch_size=n, verbose=False),
    "PGD Linf eps 0.1": lambda e, n: evasion.ProjectedGradientDescent(e, norm=np.inf, eps=0.1, eps_step=0.025,
                                                                      max_iter=10, batch_size=n, verbose=False),
    "APGD L2 eps 0.5": lambda e, n: evasion.AutoProjectedGradientDescent(e, norm=2, eps=0.5, eps_step=0.125,
                                                                         max_iter=10, nb_random_init=1, batch_size=n,
                                                                         verbose=False),
    "DeepFool": lambda e, n: evasion.DeepFool(e, max_iter=10, batch_size=n, verbose=False),
    "CW L2": lambda e, n: evasion.CarliniL2Method(e, max_iter=10, binary_search_steps=3, learning_rate=0.1,
                                                  initial_const=1.0, batch_size=n, verbose=False),
    "CW Linf": lambda e, n: evasion.CarliniLInfMethod(e, max_iter=5, learning_rate=0.1, verbose=False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=16, help="test digits attacked (default: 16)")
    parser.add_argument("--epochs", type=int, default=8, help="Gaussian training epochs (default: 8)")
    args = parser.parse_args()
    x_train, y_train = load_digits("train")
    x, y = load_digits("test", n_examples=args.examples)
    torch.manual_seed(0)
    model = get_registry().create_model("digits_cnn", "digits")
    estimator = PyTorchCATRS(model, torch.nn.CrossEntropyLoss(), DIGITS.input_shape, 10, clip_values=(0.0, 1.0),
                             device_type="cpu", sample_size=100, scale=0.25, method="gaussian")
    estimator.fit(x_train, y_train, nb_epochs=args.epochs, batch_size=64, lr=0.1)

    def accuracies(inputs: np.ndarray) -> tuple[float, float]:
        rows = estimator.predict(inputs)
        predict = float(((rows.sum(axis=1) == 1) & (rows.argmax(axis=1) == y)).mean())
        return float((estimator.soft_logits(inputs).argmax(axis=1) == y).mean()), predict

    print(f"{'attack':<18} {'seconds':>8} {'mean L2':>8} {'max Linf':>9} {'soft acc':>9} {'PREDICT acc':>12}")
    soft, predict = accuracies(x)
    print(f"{'none':<18} {'':>8} {0.0:8.3f} {0.0:9.3f} {soft:9.3f} {predict:12.3f}")
    for name, make in ATTACKS.items():
        torch.manual_seed(1)
        began = time.perf_counter()
        adversarial = make(estimator, args.examples).generate(x, y=y)
        seconds = time.perf_counter() - began
        moved = (adversarial - x).reshape(len(x), -1)
        soft, predict = accuracies(adversarial)
        print(f"{name:<18} {seconds:8.1f} {np.linalg.norm(moved, axis=1).mean():8.3f} {np.abs(moved).max():9.3f} "
              f"{soft:9.3f} {predict:12.3f}")


if __name__ == "__main__":
    main()
