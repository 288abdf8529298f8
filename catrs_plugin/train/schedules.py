"""Learning-rate schedules of the reference training scripts, as closed forms of the epoch.

Every reference script of the CAT-RS paper builds ``StepLR(optimizer, step_size, gamma)`` and
calls ``scheduler.step(epoch)`` at the *end* of epoch ``epoch`` (0-based). With an explicit
epoch, torch sets the rate from the closed form ``lr0 * gamma ** (epoch // step_size)``, so
epoch ``e >= 1`` runs at ``lr0 * gamma ** ((e - 1) // step_size)``: with a step of 50 the
rate first drops in epoch 51 and again in epoch 101 (0-based, as the released ``log.txt``
files count them), one epoch later than ``scheduler.step()`` without an argument would.

The CAT-RS ImageNet recipe also multiplies the rate by ``gamma`` at the start of epoch
``lr_drop`` (85). The next ``scheduler.step(epoch)`` recomputes the closed form and so undoes
the drop: epochs 84 to 89 run at 1e-3, 1e-4, 1e-3, 1e-3, 1e-3, 1e-3. We reproduce that.

MACER's own script (``RuntianZ/macer``, ``main.py``) uses ``MultiStepLR(milestones=[200,
400])`` and calls ``scheduler.step()`` at the *start* of each 1-based epoch, so its 200th and
400th epochs (0-based 199 and 399) are the first at the lower rates: ``lr_milestones`` holds
those 0-based epochs.

A rate that is a pure function of the epoch makes a resumed run exact without any scheduler
state: :func:`catrs_plugin.train.loop.train` sets it at the start of every epoch.
"""

from __future__ import annotations

import bisect
from typing import Sequence


def learning_rate(
    epoch: int,
    base_lr: float,
    *,
    step_size: int,
    gamma: float,
    lr_drop: int | None = None,
    milestones: Sequence[int] | None = None,
) -> float:
    """The rate that the reference scripts train epoch ``epoch`` (0-based) at.

    Parameters
    ----------
    epoch : int
        0-based epoch.
    base_lr : float
        Initial rate.
    step_size : int
        ``StepLR`` period, stepped with ``scheduler.step(epoch)`` after each epoch (ignored when
        ``milestones`` is given).
    gamma : float
        Decay factor.
    lr_drop : int, optional
        Epoch whose rate is multiplied by ``gamma`` once more (CAT-RS's ``--lr_drop``; the
        following epochs return to the closed form, as in the reference).
    milestones : sequence of int, optional
        0-based epochs from which the rate is multiplied by ``gamma`` once more each (MACER's
        ``MultiStepLR``); replaces the ``StepLR`` closed form.

    Returns
    -------
    float
        The learning rate.
    """
    if milestones is not None:
        decays = bisect.bisect_right(sorted(milestones), epoch)
    else:
        decays = max(epoch - 1, 0) // step_size
    rate = base_lr * gamma**decays
    if lr_drop is not None and epoch == lr_drop:
        rate *= gamma
    return rate


__all__ = ["learning_rate"]
