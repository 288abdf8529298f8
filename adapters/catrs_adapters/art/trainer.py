"""``CATRSTrainer``: CAT-RS training of an ART randomized-smoothing classifier, as an ART ``Trainer``."""

from __future__ import annotations

from typing import Any

import numpy as np
from art.defences.trainer import Trainer
from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing
from torch import nn

from catrs_adapters.art.fitting import (
    TEACHER_SAMPLES,
    loader_data,
    teacher_module,
    teacher_soft_labels,
    tensor_data,
    train_estimator,
)
from catrs_plugin.methods.catrs import CATRS
from catrs_plugin.utils.validation import check_non_negative, check_positive_int


class CATRSTrainer(Trainer):
    """Train an ART randomized-smoothing classifier with CAT-RS (Jeong, Kim, Shin, AAAI 2023).

    Parameters
    ----------
    classifier : PyTorchRandomizedSmoothing
        The smoothed classifier to train (ART's class or :class:`PyTorchCATRS`); its ``scale``
        is the training sigma and its optimizer, when it has one, is used.
    num_noise_vec : int
        M, Gaussian noises per example (also the number of optimizer steps per loader batch,
        as in the reference code).
    epsilon : float
        L2 radius of the worst-case noise search around each noise.
    num_steps : int
        T, steps of the KL projected gradient ascent.
    lbd : float, optional
        Weight of the worst-case term; defaults to the paper's value for the classifier's
        ``scale`` (0.5, 1.0, 2.0 at sigma 0.25, 0.5, 1.0) and must be given at other sigmas.
    confidence_mask : bool
        ImageNet recipe: apply the worst-case term only where the example is already confident.
    warmup : int, optional
        Epoch from which ``epsilon`` is doubled (ImageNet recipe), or None.
    seed : int
        Seed of the data order and of every noise draw.

    Examples
    --------
    >>> from art.defences.trainer import CATRSTrainer  # doctest: +SKIP
    >>> trainer = CATRSTrainer(smoothed, num_noise_vec=4, epsilon=1.0, num_steps=4)  # doctest: +SKIP
    >>> trainer.fit(x, y, nb_epochs=150, batch_size=256, teacher=gaussian_smoothed)  # doctest: +SKIP
    >>> prediction, radius = trainer.get_classifier().certify(x_test, n=100_000)  # doctest: +SKIP
    """

    def __init__(
        self,
        classifier: PyTorchRandomizedSmoothing,
        num_noise_vec: int = 4,
        epsilon: float = 1.0,
        num_steps: int = 4,
        lbd: float | None = None,
        confidence_mask: bool = False,
        warmup: int | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(classifier, PyTorchRandomizedSmoothing):
            raise ValueError(
                "classifier must be an ART PyTorchRandomizedSmoothing (or PyTorchCATRS) estimator, got "
                f"{type(classifier).__name__}"
            )
        super().__init__(classifier)
        overrides: dict[str, Any] = {
            "num_noise_vec": check_positive_int(num_noise_vec, "num_noise_vec"),
            "epsilon": check_non_negative(epsilon, "epsilon"),
            "num_steps": check_positive_int(num_steps, "num_steps"),
            "confidence_mask": bool(confidence_mask),
            "warmup": None if warmup is None else check_positive_int(warmup, "warmup", minimum=0),
        }
        if lbd is None:
            table = CATRS.presets["paper"]
            if float(classifier.scale) not in table:
                used = ", ".join(f"{values['lbd']} at sigma {sigma}" for sigma, values in sorted(table.items()))
                raise ValueError(
                    f"lbd has no paper default at the classifier's scale {classifier.scale}; pass lbd "
                    f"(the paper uses {used})"
                )
            lbd = table[float(classifier.scale)]["lbd"]
        overrides["lbd"] = check_non_negative(lbd, "lbd")
        self.hyperparameters = CATRS.hyperparameters(**overrides)
        self.seed = int(seed)

    def fit(
        self,
        x: np.ndarray,
        y: np.ndarray,
        nb_epochs: int = 150,
        batch_size: int = 256,
        soft_labels: np.ndarray | None = None,
        teacher: PyTorchRandomizedSmoothing | nn.Module | None = None,
        teacher_samples: int = TEACHER_SAMPLES,
        verbose: bool = True,
        scheduler: Any = None,
        validation_data: tuple[Any, Any] | None = None,
        **options: Any,
    ) -> list[dict[str, float]]:
        """Train the classifier with CAT-RS on ``(x, y)``.

        Parameters
        ----------
        x : numpy.ndarray
            Training inputs ``(n, *input_shape)``, raw (before ART's preprocessing).
        y : numpy.ndarray
            Class indices ``(n,)`` or one-hot rows ``(n, nb_classes)``.
        nb_epochs : int
            Epochs (150 in the paper's CIFAR-10 recipe).
        batch_size : int
            Loader batch size (256 in the paper), split into ``num_noise_vec`` optimizer steps.
        soft_labels : numpy.ndarray, optional
            ``(n, nb_classes)`` rows summing to 1: the smoothed prediction of a teacher.
        teacher : PyTorchRandomizedSmoothing or torch.nn.Module, optional
            Used when ``soft_labels`` is not given: its smoothed class frequencies over
            ``teacher_samples`` noisy copies of each example become the soft labels. An ART
            estimator is smoothed at its own ``scale`` (behind its preprocessing); a bare module
            at sigma 0.25, as in the paper.
        teacher_samples : int
            Noise samples per example for the teacher's soft labels (10,000 in the paper).
        verbose : bool
            Show progress bars.
        scheduler : torch.optim.lr_scheduler.LRScheduler, optional
            Your scheduler of the classifier's optimizer, stepped after every epoch (as in
            :meth:`PyTorchCATRS.fit <catrs_adapters.art.estimator.PyTorchCATRS.fit>`).
        validation_data : tuple, optional
            ``(x_val, y_val)``: the smoothed classifier's PREDICT accuracy, logged after every epoch.
        **options
            Training options: ``checkpoint`` (written every epoch and resumed), ``amp``,
            ``channels_last``, ``fused``, and, when the classifier has no optimizer (the
            paper's SGD and step schedule are then used), ``lr``, ``momentum``,
            ``weight_decay``, ``lr_step_size``, ``gamma``, ``lr_drop``. A classifier's own
            optimizer keeps your learning rate (see :mod:`catrs_adapters.art.fitting`).

        Returns
        -------
        list of dict
            Per-epoch ``epoch``, ``loss``, ``lr`` and ``seconds`` (and ``val_accuracy``).
        """
        if soft_labels is None:
            if teacher is None:
                raise ValueError(
                    "CAT-RS needs soft labels: pass soft_labels (an (examples, classes) array, e.g. from "
                    "catrs_plugin.smoothed_soft_labels or `catrs smooth-predict`) or teacher (a Gaussian-trained "
                    "classifier, smoothed here at sigma 0.25 as in the paper)"
                )
            soft_labels = self.teacher_soft_labels(teacher, x, teacher_samples, verbose)
        data = tensor_data(self._classifier, x, y, soft_labels)
        return train_estimator(self._classifier, CATRS, self.hyperparameters, data, nb_epochs, batch_size, verbose,
                               self.seed, options, scheduler=scheduler, validation_data=validation_data)

    def fit_generator(
        self,
        generator: Any,
        nb_epochs: int = 150,
        verbose: bool = True,
        scheduler: Any = None,
        validation_data: tuple[Any, Any] | None = None,
        **options: Any,
    ) -> list:
        """Train from an ART ``PyTorchDataGenerator`` whose loader yields ``(x, y, soft_labels)`` batches.

        For data too large for memory (ImageNet); the other arguments are those of :meth:`fit`.
        """
        return train_estimator(self._classifier, CATRS, self.hyperparameters, loader_data(generator), nb_epochs,
                               generator.batch_size, verbose, self.seed, options, scheduler=scheduler,
                               validation_data=validation_data)

    def teacher_soft_labels(
        self, teacher: PyTorchRandomizedSmoothing | nn.Module, x: np.ndarray, samples: int, verbose: bool
    ) -> np.ndarray:
        """Smoothed class frequencies of ``teacher`` on ``x`` (see :meth:`fit`)."""
        module, sigma = teacher_module(teacher)
        return teacher_soft_labels(self._classifier, module, sigma, x, samples, self.seed, verbose)
