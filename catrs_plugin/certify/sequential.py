"""Sequential CERTIFY: Cohen et al.'s certificate from as few estimation samples as the answer needs.

Cohen et al.'s CERTIFY draws ``N`` estimation samples for every input, whatever the input.
Most inputs are settled long before: a clean image whose ``pA`` is near 1 is certified at every
radius of a results table after a few thousand samples, an image whose ``pA`` is near 1/2 is
certainly uncertifiable at the larger radii early on. This module stops sampling an input as soon
as the radii the caller asked about are decided, with the same guarantee as CERTIFY: for each
input, the returned radius exceeds the true one with probability at most ``alpha``.

The procedure, per input (:func:`certify_sequential`)
-----------------------------------------------------
1. **Selection**, exactly as CERTIFY: ``N0`` samples from the input's selection stream pick the
   class ``cA``; they are never counted in the estimate.
2. **Estimation** from the input's estimation stream (the same samples, in the same order, as
   CERTIFY's), in blocks of :data:`~catrs_plugin.certify.streams.NOISE_BLOCK`. After every
   block, with ``S`` of the ``n`` samples so far in class ``cA``, the **confidence sequence**
   ``[L_n, U_n]`` for ``pA`` is checked (:func:`confidence_sequence`):

   ``M_n(p) = B(S + 1/2, n - S + 1/2) / B(1/2, 1/2) / (p^S (1 - p)^(n - S))``,
   ``CS_n = {p : M_n(p) < 1 / alpha_sequence}``.

   ``M_n(p)`` is the likelihood ratio of a Beta(1/2, 1/2) mixture against ``p``; at the true
   ``pA`` it is a non-negative martingale starting at 1, so by Ville's inequality
   ``P(pA leaves CS_n at any n) <= alpha_sequence``. The bound holds at every ``n`` at once,
   which is what makes looking after every block and stopping whenever we like safe (a
   Clopper-Pearson bound re-checked after every block is not: ``tests/test_sequential.py``
   shows it failing). ``L_n`` and ``U_n`` depend on ``(n, S)`` only.
3. **Stopping** (:class:`StoppingRule`), given radii ``r_1 < ... < r_m`` (always with ``r = 0``)
   and thresholds ``t_j = Phi(r_j / sigma)``: radius ``r_j`` is decided once ``L_n >= t_j``
   (certified), ``U_n < t_j`` (certainly not), or ``t_j`` is above the largest bound the
   remaining budget could still give (never certified at ``N``). The input stops when every
   radius is decided, and returns ``cA`` with radius ``sigma * PhiInverse(L_n)``, or abstains
   (-1, radius 0) when ``L_n < 1/2``: Cohen's decision rule on ``L_n``.
4. **Fallback at the budget** ``N``: the input returns the larger of ``L_N`` and the exact
   one-sided Clopper-Pearson bound at ``alpha - alpha_sequence`` on all ``N`` estimation samples
   (Cohen's bound), with Cohen's decision rule.

The guarantee: the input's result is wrong only if ``pA`` leaves the confidence sequence at some
``n`` (probability ``<= alpha_sequence``, whatever the stopping rule) or the Clopper-Pearson bound
at ``N`` exceeds ``pA`` (probability ``<= alpha - alpha_sequence``). By the union bound the
failure probability is at most ``alpha``. The "certainly not" decisions hold at
``alpha_sequence`` as well (both ends come from the same sequence). The stopping rule only
decides how many samples are drawn, never which bound is valid.

**What the results mean.** A stopped input's radius is a valid certificate that may be smaller
than exact CERTIFY's (it is only guaranteed to clear the requested radii it certified), so the
average certified radius (ACR) of a sequential run is not comparable with exact CERTIFY's ACR.
Certified accuracy at the requested radii is: an input counts at ``r_j`` when ``L >= t_j``, as
CERTIFY counts it when its bound is.

**Stopping off** (``radii=None``): every input draws ``N`` samples and gets the Clopper-Pearson
bound at the whole ``alpha``: exactly CERTIFY's counts and results.

**Label-aware exit (evaluation only).** When the labels are known (``labels``), an input whose
selected class is not its label is finished after the selection: CERTIFY returns ``cA`` or
abstains, and either differs from the label, so the input is incorrect at every radius whatever
the estimation gives. Its result holds ``cA`` as the class, radius 0 and 0 estimation samples
(the Cohen-format row: ``predict`` = ``cA``, ``radius`` 0, ``correct`` 0, ``samples`` 0). Its
class is therefore not a certified prediction, and the share of abstentions of such a run is
not CERTIFY's; certified accuracy at every radius is.

**Many inputs in flight.** A forward batch holds whole blocks of up to ``batch_size //
NOISE_BLOCK`` unfinished inputs, refilled from the queue as inputs finish (when fewer inputs
remain, each gets several blocks per batch, at most a quarter of what it has drawn, and the
check still happens after each block).
Each input's noise comes only from its own stream, so results do not depend on the batch size
or on the other inputs of a call. The success counts stay on the device; one small array of
per-block counts goes to the host per forward batch.

Literature: Ville's inequality and mixture confidence sequences for a binomial proportion
(Howard et al., 2021); Voracek, NeurIPS 2024, on anytime-valid estimation in randomized
smoothing; Horvath et al., ICLR 2022, on adaptive sampling with a split failure budget. Samples
that influence a choice (class, stopping) are either selection samples never reused, or inside
the anytime-valid bound: reusing pilot samples in a fixed-``n`` bound (as the released code of
Chen et al., AAAI 2022 does) is not sound.
"""

from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
from scipy.special import betaln, xlog1py, xlogy
from scipy.stats import norm
from tqdm.auto import tqdm

from catrs_plugin.certify.stats import certified_radius, lower_confidence_bound
from catrs_plugin.certify.streams import ESTIMATION, NOISE_BLOCK, SELECTION
from catrs_plugin.results.metrics import TABLE_RADII
from catrs_plugin.utils import defaults
from catrs_plugin.utils.validation import check_alpha, check_labels, check_positive_int, check_sigma

#: The radii decided when none are given: those of ``catrs analyze``'s table, 0 to 2 in steps of 0.25.
DEFAULT_RADII = TABLE_RADII

#: Share of ``alpha`` given to the confidence sequence when ``alpha_sequence`` is not given
#: (the rest goes to the Clopper-Pearson fallback at ``N``). Chosen by replaying the published
#: CAT-RS results through the procedure (``benchmarks/sequential.py replay --shares ...``;
#: docs/benchmarks.rst): from 0.1 to 0.8 of alpha the samples per image fall by 4 to 9 %, while
#: the certified accuracy at the largest reachable radius moves further from exact CERTIFY's
#: (the fallback at ``N`` gets less of alpha: 0.6 percentage points at 0.8); at 0.2 it stays
#: within 0.03 points at every radius, for 2 to 4 % more samples than at 0.5.
SEQUENCE_SHARE = defaults.SEQUENCE_SHARE

#: Parameter of the Beta(a, a) mixing distribution of the confidence sequence (Jeffreys' prior).
PRIOR = 0.5

#: Bisection steps of the confidence sequence's ends (each halves a bracket within [0, 1]).
BISECTION_STEPS = 64


class SequentialResult(NamedTuple):
    """What :func:`certify_sequential` returns for each input."""

    #: Class per input, -1 for abstain.
    predictions: np.ndarray
    #: Certified L2 radius per input (0 on abstain and for a label-aware exit).
    radii: np.ndarray
    #: Estimation samples each input used (selection samples not counted).
    samples: np.ndarray


def log_mixture(n: np.ndarray | int, successes: np.ndarray | int, p: np.ndarray | float) -> np.ndarray:
    """``log M_n(p)``: the log likelihood ratio of the Beta(1/2, 1/2) mixture against ``p``.

    ``M_n(p) = B(S + 1/2, n - S + 1/2) / B(1/2, 1/2) / (p^S (1 - p)^(n - S))`` for ``S =
    successes`` of ``n`` trials; convex in ``p`` with its minimum (below 0) at ``S / n``.
    Arguments broadcast.
    """
    n = np.asarray(n, dtype=np.float64)
    s = np.asarray(successes, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    return betaln(s + PRIOR, n - s + PRIOR) - betaln(PRIOR, PRIOR) - xlogy(s, p) - xlog1py(n - s, -p)


def _boundary(n: np.ndarray, s: np.ndarray, level: float, inside: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """Bisection for the end of ``{p : log M_n(p) < level}`` between a point ``inside`` it and one
    ``outside`` it (elementwise); returns a point outside, i.e. the conservative side of the end."""
    inside, outside = inside.astype(np.float64).copy(), outside.astype(np.float64).copy()
    for _ in range(BISECTION_STEPS):
        middle = (inside + outside) / 2
        out = log_mixture(n, s, middle) >= level
        outside = np.where(out, middle, outside)
        inside = np.where(out, inside, middle)
    return outside


def confidence_sequence(
    n: np.ndarray | int, successes: np.ndarray | int, alpha: float, floor: np.ndarray | float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """The ends ``(L_n, U_n)`` of the anytime-valid ``(1 - alpha)`` confidence sequence for a proportion.

    ``P(L_n <= p <= U_n for every n) >= 1 - alpha`` for i.i.d. Bernoulli(p) trials: the set
    ``{p : M_n(p) < 1 / alpha}`` of :func:`log_mixture`, whose ends are found by bisection on
    each side of ``S / n`` and rounded outwards (``L_n`` down, ``U_n`` up). ``L_n = 0`` when
    ``S = 0`` and ``U_n = 1`` when ``S = n``.

    Parameters
    ----------
    n, successes : int or numpy.ndarray
        Trials and successes so far (``n >= 1``); they broadcast.
    alpha : float
        Failure probability of the whole sequence.
    floor : float or numpy.ndarray
        A point known to lie below the sequence (e.g. a threshold already tested with
        :meth:`StoppingRule.certified`): the lower end is searched above it, so it is at least ``floor``.
    """
    n, s = np.broadcast_arrays(np.asarray(n, dtype=np.float64), np.asarray(successes, dtype=np.float64))
    level = float(np.log(1.0 / alpha))
    estimate = s / n
    low = np.broadcast_to(np.asarray(floor, dtype=np.float64), n.shape)
    lower = np.where(s > 0, _boundary(n, s, level, estimate, low), 0.0)
    upper = np.where(s < n, _boundary(n, s, level, estimate, np.ones_like(estimate)), 1.0)
    return lower, upper


def thresholds(radii: Sequence[float], sigma: float) -> np.ndarray:
    """``Phi(r / sigma)`` for each radius, raised to the next float where rounding would give a bound
    at the threshold a radius ``sigma * PhiInverse(bound)`` below ``r``."""
    values = norm.cdf(np.asarray(radii, dtype=np.float64) / sigma)
    for j, radius in enumerate(radii):
        while certified_radius(values[j], sigma) < radius:
            values[j] = np.nextafter(values[j], 1.0)
    return values


class StoppingRule:
    """When an input may stop, and the bound on ``pA`` it then returns: functions of ``(n, S)`` only.

    Parameters
    ----------
    sigma : float
        Noise level (radii become thresholds on ``pA``).
    n : int
        The budget ``N`` of estimation samples.
    alpha : float
        Failure probability of the whole procedure.
    radii : sequence of float or None
        Radii to decide (>= 0; 0 is added). ``None``: no stopping, and the bound at ``N`` is
        the Clopper-Pearson bound at ``alpha`` (exact CERTIFY).
    alpha_sequence : float, optional
        The confidence sequence's failure probability, in (0, ``alpha``); default
        :data:`SEQUENCE_SHARE` ``* alpha``. Unused without ``radii``.

    Attributes
    ----------
    radii : tuple of float
        The radii decided, sorted (empty without stopping).
    thresholds : numpy.ndarray
        ``Phi(r / sigma)`` per radius (see :func:`thresholds`).
    alpha_sequence, alpha_fallback : float
        The two parts of ``alpha`` (``alpha_sequence = 0`` without stopping).
    final_counts : numpy.ndarray
        Per radius, the fewest successes of ``N`` whose fallback bound certifies it (``N + 1``
        when none does): with fewer than that still possible, the radius is never certified.
    """

    def __init__(self, sigma: float, n: int, alpha: float, radii: Sequence[float] | None = DEFAULT_RADII,
                 alpha_sequence: float | None = None) -> None:
        self.sigma = check_sigma(sigma)
        self.n = check_positive_int(n, "n")
        self.alpha = check_alpha(alpha)
        self.stops = radii is not None
        if not self.stops:
            self.radii: tuple[float, ...] = ()
            self.alpha_sequence = 0.0
        else:
            values = [float(r) for r in radii]
            if any(not np.isfinite(r) or r < 0 for r in values):
                raise ValueError(f"radii must be finite numbers >= 0, got {list(radii)}")
            self.radii = tuple(sorted(set(values) | {0.0}))
            share = SEQUENCE_SHARE * self.alpha if alpha_sequence is None else float(alpha_sequence)
            if not 0.0 < share < self.alpha:
                raise ValueError(f"alpha_sequence must lie in (0, alpha) = (0, {self.alpha}), got {alpha_sequence!r}")
            self.alpha_sequence = share
        self.alpha_fallback = self.alpha - self.alpha_sequence
        self.level = float(np.log(1.0 / self.alpha_sequence)) if self.stops else np.inf
        self.thresholds = thresholds(self.radii, self.sigma)
        self.final_counts = self._final_counts()

    def describe(self) -> dict[str, Any]:
        """The settings that decide the results (for a result file's provenance record)."""
        return {"procedure": "sequential", "radii": list(self.radii), "alpha_sequence": self.alpha_sequence,
                "confidence_sequence": "beta-binomial mixture, Beta(1/2, 1/2)"}

    def checks(self) -> np.ndarray:
        """The sample counts after which the rule is consulted: every block end, and ``N``."""
        return np.minimum(np.arange(NOISE_BLOCK, self.n + NOISE_BLOCK, NOISE_BLOCK), self.n)

    def _tested(self, n: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(n, S, thresholds)`` broadcast to ``(..., radii)`` and whether each threshold lies outside ``CS_n``."""
        n = np.asarray(n, dtype=np.float64)[..., None]
        s = np.asarray(s, dtype=np.float64)[..., None]
        outside = log_mixture(n, s, self.thresholds) >= self.level
        return n, s, outside

    def certified(self, n: np.ndarray | int, s: np.ndarray | int) -> np.ndarray:
        """``L_n >= t_j`` per radius (last axis): the threshold lies below ``S / n`` and outside ``CS_n``."""
        n, s, outside = self._tested(n, s)
        return outside & (self.thresholds * n < s)

    def below(self, n: np.ndarray | int, s: np.ndarray | int) -> np.ndarray:
        """``U_n < t_j`` per radius (last axis): ``pA`` is certainly below the threshold."""
        n, s, outside = self._tested(n, s)
        return outside & (self.thresholds * n > s)

    def decided(self, n: np.ndarray | int, s: np.ndarray | int) -> np.ndarray:
        """Whether an input with ``s`` successes in ``n`` samples stops now: at ``N``, or (with
        radii) when every radius is certified, certainly not, or out of the budget's reach."""
        n_array, s_array = np.broadcast_arrays(np.asarray(n), np.asarray(s))
        done = n_array >= self.n
        if not self.stops:
            return done
        unreachable = s_array[..., None] + (self.n - n_array[..., None]) < self.final_counts
        settled = self.certified(n_array, s_array) | self.below(n_array, s_array) | unreachable
        return done | settled.all(axis=-1)

    def bound(self, n: np.ndarray | int, s: np.ndarray | int) -> np.ndarray:
        """The lower bound on ``pA`` an input returns after ``n`` samples with ``s`` successes.

        Below ``N``: ``L_n`` (at least the largest threshold :meth:`certified` reports). At ``N``:
        ``max(CP_N, L_N)``, ``CP_N`` the Clopper-Pearson bound at ``alpha - alpha_sequence``
        (without stopping: at ``alpha``, exactly CERTIFY's bound).
        """
        n, s = np.broadcast_arrays(np.asarray(n, dtype=np.int64), np.asarray(s, dtype=np.int64))
        fallback = lower_confidence_bound(s, self.n, self.alpha_fallback)
        if not self.stops:
            return np.where(n >= self.n, fallback, 0.0)
        certified = self.certified(n, s)
        floor = np.max(np.where(certified, self.thresholds, 0.0), axis=-1)
        lower, _ = confidence_sequence(np.maximum(n, 1), s, self.alpha_sequence, floor)
        return np.where(n >= self.n, np.maximum(fallback, lower), lower)

    def _final_counts(self) -> np.ndarray:
        """Binary search, per threshold, for the fewest successes of ``N`` whose fallback bound reaches it."""
        low = np.zeros(len(self.thresholds), dtype=np.int64)  # fewer than low successes do not reach it
        high = np.full(len(self.thresholds), self.n + 1, dtype=np.int64)  # high (<= N) successes do
        while np.any(low < high):
            middle = np.minimum((low + high) // 2, self.n)
            reaches = lower_confidence_bound(middle, self.n, self.alpha_fallback) >= self.thresholds
            if self.stops:
                reaches |= np.diagonal(self.certified(np.full(len(middle), self.n), middle))
            searching = low < high
            high = np.where(searching & reaches, middle, high)
            low = np.where(searching & ~reaches, middle + 1, low)
        return low


def simulate(rule: StoppingRule, block_successes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run ``rule`` on given estimation outcomes instead of a model: where each input stops, and its bound.

    ``block_successes[i, b]`` is the number of samples of block ``b`` (of the sizes
    ``numpy.diff(rule.checks(), prepend=0)``) in input ``i``'s selected class, e.g.
    ``rng.binomial(sizes, p[:, None])`` for inputs with ``pA = p``. Each input stops where
    :func:`certify_sequential` would stop it on those outcomes, and its counts over all blocks are
    what exact CERTIFY would count. For planning budgets (the expected samples of an input with a
    given ``pA``), for replaying published results (``benchmarks/sequential.py replay``) and for
    the Monte-Carlo tests.

    Returns
    -------
    bound : numpy.ndarray
        The lower bound on ``pA`` each input returns (:meth:`StoppingRule.bound`).
    samples : numpy.ndarray
        The estimation samples each input used.
    """
    checks = rule.checks()
    blocks = np.asarray(block_successes)
    if blocks.ndim != 2 or blocks.shape[1] != len(checks):
        raise ValueError(f"block_successes must have shape (inputs, {len(checks)}) (one column per block of "
                         f"rule.checks()), got {blocks.shape}")
    cumulative = np.cumsum(blocks, axis=1)
    active = np.arange(len(blocks))
    bound, samples = np.zeros(len(blocks)), np.zeros(len(blocks), dtype=np.int64)
    for column, checked in enumerate(checks):
        successes = cumulative[active, column]
        stop = rule.decided(checked, successes)
        done = active[stop]
        bound[done], samples[done] = rule.bound(checked, successes[stop]), checked
        active = active[~stop]
        if not len(active):
            break
    return bound, samples


def certify_sequential(
    smooth: Any,
    inputs: torch.Tensor,
    keys: np.ndarray,
    n0: int,
    n: int,
    alpha: float,
    radii: Sequence[float] | None = DEFAULT_RADII,
    alpha_sequence: float | None = None,
    labels: Sequence[int] | np.ndarray | None = None,
) -> SequentialResult:
    """Sequential CERTIFY of ``inputs`` on ``smooth``'s base classifier (see the module docstring).

    Called by :meth:`catrs_plugin.certify.smoothing.Smooth.certify_sequential`, which checks
    the inputs and sets the model to inference; its arguments are described there.

    Parameters
    ----------
    smooth : catrs_plugin.certify.smoothing.Smooth
        The smoothed classifier: its noise streams (:meth:`~Smooth.noise_stream`), forward pass
        (:meth:`~Smooth.classify`), selection counts and batch size.
    inputs : torch.Tensor
        Inputs on the model's device.
    keys : numpy.ndarray
        Data-set index of each input (seeds its streams).
    """
    n0 = check_positive_int(n0, "n0")
    rule = StoppingRule(smooth.sigma, n, alpha, radii, alpha_sequence)
    count = len(inputs)
    selected = smooth.sample_counts(inputs, {SELECTION: n0}, keys)[:, 0].argmax(axis=1)
    exits = np.zeros(count, dtype=bool)
    if labels is not None:
        exits = selected != check_labels(labels, smooth.num_classes, count, "labels")
    estimated = np.flatnonzero(~exits)
    samples, successes = np.zeros(count, dtype=np.int64), np.zeros(count, dtype=np.int64)
    if len(estimated):
        samples[estimated], successes[estimated] = _estimate(smooth, inputs[estimated], keys[estimated],
                                                             selected[estimated], rule)
    bound = np.where(exits, 0.0, rule.bound(samples, successes))
    abstain = (bound < 0.5) & ~exits
    predictions = np.where(abstain, -1, selected).astype(np.int64)
    certified = np.where(abstain | exits, 0.0, certified_radius(bound, rule.sigma))
    return SequentialResult(predictions, certified, samples)


def _estimate(smooth: Any, inputs: torch.Tensor, keys: np.ndarray, classes: np.ndarray,
              rule: StoppingRule) -> tuple[np.ndarray, np.ndarray]:
    """Draw estimation blocks until ``rule`` stops each input; ``(samples, successes)`` per input.

    Each forward batch holds up to ``capacity`` blocks: one per input in flight, or, when fewer
    inputs than ``capacity`` remain, several per input, but never more than a quarter of the
    blocks the input has drawn so far (the samples drawn past an input's stop, which are wasted,
    stay below a quarter of those it used). Block ``b`` of an input is always the ``b``-th block
    of its own stream, and the rule sees the counts after each block in order, so where the
    input stops does not depend on how the batches were filled.
    """
    device, shape, budget = inputs.device, tuple(inputs.shape[1:]), rule.n
    capacity = max(1, smooth.resolve_batch_size(shape) // NOISE_BLOCK)
    noise = torch.empty((capacity * NOISE_BLOCK, *shape), device=device)
    wanted = torch.as_tensor(classes, dtype=torch.long, device=device)
    samples, successes = np.zeros(len(inputs), dtype=np.int64), np.zeros(len(inputs), dtype=np.int64)
    queue = deque(range(len(inputs)))
    flight: dict[int, torch.Generator] = {}
    with tqdm(total=len(inputs), unit="input", desc="sequential", disable=not smooth.progress) as bar:
        while queue or flight:
            while queue and len(flight) < capacity:
                position = queue.popleft()
                flight[position] = smooth.noise_stream(int(keys[position]), ESTIMATION)
            share = capacity // len(flight)
            owners, sizes, filled = [], [], 0
            for position, generator in flight.items():
                start = filled
                drawn = int(samples[position])
                blocks = min(share, -(-(budget - drawn) // NOISE_BLOCK), max(1, drawn // NOISE_BLOCK // 4))
                for _ in range(blocks):
                    noise[filled : filled + NOISE_BLOCK].normal_(generator=generator)
                    size = min(NOISE_BLOCK, budget - drawn)
                    owners.append(position)
                    sizes.append(size)
                    filled += size
                    drawn += size
                noise[start:filled].mul_(smooth.sigma).add_(inputs[position])
            block_of = torch.repeat_interleave(torch.arange(len(sizes), device=device),
                                               torch.as_tensor(sizes, device=device))
            owner = torch.as_tensor(owners, dtype=torch.long, device=device)
            hits = smooth.classify(noise[:filled]) == wanted[owner][block_of]
            per_block = torch.zeros(len(sizes), dtype=torch.long, device=device).index_add_(0, block_of, hits.long())
            finished = _advance(np.asarray(owners), np.asarray(sizes), per_block.cpu().numpy(), samples, successes,
                                rule)
            for position in finished:
                del flight[position]
            bar.update(len(finished))
    return samples, successes


def _advance(owners: np.ndarray, sizes: np.ndarray, hits: np.ndarray, samples: np.ndarray, successes: np.ndarray,
             rule: StoppingRule) -> list[int]:
    """Consult ``rule`` after each block of one forward batch (an input's blocks are contiguous and in
    stream order); update ``samples`` and ``successes`` to each input's stopping block or last block,
    and return the inputs that stopped."""
    first = np.r_[True, owners[1:] != owners[:-1]]
    starts = np.flatnonzero(first)
    owner_start = starts[np.cumsum(first) - 1]  # per block: the index of its input's first block

    def running(values: np.ndarray) -> np.ndarray:  # per block: the sum over its input's blocks up to it
        total = np.cumsum(values)
        return total - (total - values)[owner_start]

    n_after = samples[owners] + running(sizes)
    s_after = successes[owners] + running(hits)
    stop = rule.decided(n_after, s_after)
    finished = []
    ends = np.r_[starts[1:], len(owners)]
    for begin, end in zip(starts, ends):
        stopped = np.flatnonzero(stop[begin:end])
        last = begin + (stopped[0] if len(stopped) else end - begin - 1)
        position = int(owners[begin])
        samples[position], successes[position] = n_after[last], s_after[last]
        if len(stopped):
            finished.append(position)
    return finished
