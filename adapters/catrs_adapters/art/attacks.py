"""Which of ART's evasion attacks make sense on a smoothed classifier, and the refusal of the others.

ART lets an attack refuse an estimator (its ``_estimator_requirements``, checked against the
estimator's classes) but gives an estimator no say. :class:`PyTorchCATRS` is an ART
``PyTorchClassifier``, so every attack for classifiers accepts it; the attacks that make no
sense on a smoothed classifier are refused where they first call the estimator: its
``predict``, ``loss_gradient``, ``class_gradient``, ``compute_loss``, ``get_activations``,
``_predict_framework`` and ``model`` call :func:`attack_in_progress`, which finds the ART
attack (if any) among its callers and raises :class:`UnsupportedAttack` for those of
:data:`REFUSED`.

The attacks that run see the *smoothed soft classifier* ``G(x) = mean_i softmax(f(x + d_i))``
(Salman et al. 2019) and nothing else: ``predict`` returns ``log G`` (its logits) to them,
``loss_gradient``, ``class_gradient`` and ``compute_loss`` differentiate and evaluate the same
``log G``. Gradient attacks (FGM, PGD and BIM, APGD with ``loss_type=None``, DeepFool,
Carlini-Wagner, ...) therefore attack the smoothed classifier consistently.

Attacks that ART itself refuses for this estimator (object detection, speech, TensorFlow-only,
decision trees) raise ART's own ``EstimatorError``.
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any

#: APGD and its conjugate-gradient relatives: with a ``loss_type`` they rebuild a plain
#: ``PyTorchClassifier`` from ``estimator.model``, i.e. attack the base classifier without noise.
LOSS_TYPE_ATTACKS = ("AutoProjectedGradientDescent", "AutoConjugateGradient", "RescalingAutoConjugateGradient")

_DECISION = (
    "it searches for the decision boundary (bisection, geometric or sign steps) assuming a deterministic "
    "classifier; the smoothed classifier's prediction is a Monte-Carlo test that varies between calls and "
    "abstains near the boundary, so the search would follow sampling noise"
)
_SCORES = (
    "it estimates gradients or accepts steps from differences of the classifier's scores between nearby "
    "inputs; the smoothed classifier's scores are Monte-Carlo estimates whose noise exceeds those differences"
)
_BASE = (
    "it reads estimator.model (the base network) or its activations directly, without the Gaussian noise, so its "
    "examples would attack the base classifier rather than the smoothed one; to attack the base classifier, "
    "wrap estimator.model in art.estimators.classification.PyTorchClassifier"
)

#: ART evasion attacks refused on a smoothed classifier (class name -> why; subclasses included).
REFUSED = {
    "BoundaryAttack": _DECISION,
    "HopSkipJump": _DECISION,
    "GeoDA": _DECISION,
    "SignOPTAttack": _DECISION,
    "BrendelBethgeAttack": "it needs exact logits, and " + _DECISION,
    "ZooAttack": _SCORES,
    "SimBA": _SCORES,
    "SquareAttack": _SCORES,
    "PixelThreshold": _SCORES,
    "VirtualAdversarialMethod": _SCORES,
    "AutoAttack": (
        "it runs APGD with the cross-entropy and difference-of-logits-ratio losses (which rebuild a classifier from "
        "the base network) and the Square attack (" + _SCORES + "); RobustBench evaluates randomized defences "
        "with its 'rand' version instead"
    ),
    "AdversarialPatchPyTorch": _BASE,
    "FeatureAdversariesPyTorch": _BASE,
    "CompositeAdversarialAttackPyTorch": _BASE,
    "OverTheAirFlickeringPyTorch": _BASE,
    "GRAPHITEWhiteboxPyTorch": _BASE,
}

#: What to run instead, appended to every refusal.
ALTERNATIVES = (
    "attack the smoothed classifier with a gradient attack that runs on it: FastGradientMethod, "
    "ProjectedGradientDescent, AutoProjectedGradientDescent(loss_type=None), DeepFool, CarliniL2Method, "
    "CarliniLInfMethod"
)


class UnsupportedAttack(TypeError):
    """An ART attack that makes no sense on a smoothed classifier called into :class:`PyTorchCATRS`."""


def attack_in_progress(estimator: Any) -> Any | None:
    """The innermost ART evasion attack among the callers, or ``None`` when no attack is running.

    Raises
    ------
    UnsupportedAttack
        When an attack of :data:`REFUSED` is among the callers, or one of
        :data:`LOSS_TYPE_ATTACKS` with a ``loss_type`` (its constructor probes ``predict``);
        the outermost such attack is named (AutoAttack rather than the APGD it builds).
    """
    innermost, refusal = None, None
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        attack = _attack_of(frame)
        if attack is not None:
            innermost = attack if innermost is None else innermost
            reason = _reason(attack, frame)
            refusal = (attack, reason) if reason is not None else refusal
        frame = frame.f_back
    if refusal is not None:
        attack, reason = refusal
        raise UnsupportedAttack(
            f"{type(attack).__name__} does not run on the smoothed classifier {type(estimator).__name__}: "
            f"{reason}. Instead, {ALTERNATIVES}."
        )
    return innermost


def _attack_of(frame: FrameType) -> Any | None:
    code = frame.f_code
    if not code.co_argcount or code.co_varnames[0] != "self":
        return None
    owner = frame.f_locals.get("self")
    names = {(cls.__module__, cls.__name__) for cls in type(owner).__mro__}
    return owner if ("art.attacks.attack", "EvasionAttack") in names else None


def _reason(attack: Any, frame: FrameType) -> str | None:
    """Why ``attack`` (running in ``frame``) is refused, or ``None``."""
    names = [cls.__name__ for cls in type(attack).__mro__ if cls.__module__.startswith("art.attacks.")]
    reason = next((REFUSED[name] for name in names if name in REFUSED), None)
    if reason is None and any(name in LOSS_TYPE_ATTACKS for name in names):
        # The constructor probes predict before it stores loss_type: read it from the frame then.
        loss_type = getattr(attack, "loss_type", frame.f_locals.get("loss_type"))
        if loss_type is not None:
            reason = (
                f"with loss_type={loss_type!r} it rebuilds a plain PyTorchClassifier from estimator.model and "
                "attacks the base network without noise; pass loss_type=None to attack the smoothed soft classifier "
                "through this estimator's loss_gradient and compute_loss"
            )
    return reason
