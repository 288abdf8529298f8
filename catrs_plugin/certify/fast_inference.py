"""Prepared inference copies of a base classifier: the fast certification path.

:func:`prepare_forward` turns a model into the callable that :class:`~catrs_plugin.certify.smoothing.Smooth`
forwards its noisy batches through. The exact recipe (the default) is the model itself. The
fast recipe (:func:`fast_recipe`, ``Smooth(..., fast=True)``) combines

* batch-norm folded into the preceding convolutions (:func:`fold_batchnorm`),
* the ``channels_last`` memory format for 4-d inputs,
* ``torch.autocast`` in bfloat16,
* ``torch.compile`` with Inductor's ``freezing`` (weights become constants, so Inductor folds
  and pre-casts them) and ``dynamic=False``, and on CUDA Inductor's CUDA graphs
  (``triton.cudagraphs``; the engine keeps shapes fixed, see :func:`padded_size`).

Everything happens on a copy: the model passed in is never modified. Compiled copies are
cached per model (weakly: a model that is garbage-collected takes its copies with it) and per
recipe, so a model is copied and compiled once per input shape and process, however many
``Smooth`` objects or ``certify_to_file`` calls use it. A cached copy whose model's
parameters or buffers changed since is rebuilt: every lookup (each ``Smooth`` call) compares a
content fingerprint of the weights (:func:`weights_fingerprint`, one pass over them on their
device), so changes that PyTorch does not count (writes through ``.data``, as user code and
some of ART's code do) are seen as well as optimizer steps and ``load_state_dict``. The
compilation time of each new shape is logged (logger ``catrs_plugin.certify.fast_inference``, level
INFO); if compilation fails (no C++ compiler for Inductor on the CPU, an unsupported
operation), the copy runs eagerly and a ``RuntimeWarning`` says why.

None of this changes the noise. Folding and fused kernels round differently from the plain
fp32 forward pass and bfloat16 keeps 8 bits of mantissa, so a noisy sample near a decision
boundary can change class; docs/benchmarks.rst states how far certificates move on trained
models.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

logger = logging.getLogger(__name__)

#: Autocast dtype of the fast recipe.
FAST_DTYPE = torch.bfloat16

#: A compiled forward pass sees at most this many batch sizes: a partial batch is padded up to
#: the next multiple of ``1 / PAD_STEPS`` of the full batch (see :func:`padded_size`).
PAD_STEPS = 8

_CONVOLUTIONS = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}


@dataclass(frozen=True)
class Recipe:
    """How to prepare a model for inference.

    Attributes
    ----------
    autocast_dtype : torch.dtype or None
        Run the forward pass under ``torch.autocast`` in this dtype.
    channels_last : bool
        Convert 4-d inputs (and, for a copy, the weights) to the ``channels_last`` format.
    fold_batchnorm : bool
        Fold batch-norm layers into the convolutions before them (on a copy).
    compile_mode : str or None
        ``torch.compile`` mode (``"default"``, ``"reduce-overhead"``, ``"max-autotune"``).
    freeze : bool
        ``torch.compile`` with Inductor's ``freezing`` instead of a mode (the fast recipe).
    cuda_graphs : bool
        With ``freeze``: also Inductor's CUDA graphs (CUDA only).
    """

    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False
    fold_batchnorm: bool = False
    compile_mode: str | None = None
    freeze: bool = False
    cuda_graphs: bool = False

    @property
    def compiled(self) -> bool:
        """Whether the forward pass goes through ``torch.compile`` (and shapes should stay fixed)."""
        return self.freeze or self.compile_mode is not None

    @property
    def copied(self) -> bool:
        """Whether the recipe works on a cached copy of the model (it changes weights or their layout)."""
        return self.compiled or self.fold_batchnorm or self.channels_last


def fast_recipe(device: torch.device, autocast_dtype: torch.dtype | None = None) -> Recipe:
    """The fast recipe on ``device``: everything of the module docstring (CUDA graphs on CUDA only)."""
    return Recipe(
        autocast_dtype=autocast_dtype or FAST_DTYPE,
        channels_last=True,
        fold_batchnorm=True,
        freeze=True,
        cuda_graphs=torch.device(device).type == "cuda",
    )


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with batch norm folded into the convolutions before it.

    The model is traced with ``torch.fx``; every batch-norm layer (tracking running statistics)
    whose input is the output of a convolution, used nowhere else, becomes part of that
    convolution's weight and bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``). Modules
    called more than once are left alone. A model that ``torch.fx`` cannot trace is returned
    as an unfolded copy (Inductor's freezing folds batch norm in the compiled graph as well).
    """
    folded = copy.deepcopy(model).eval()
    try:
        traced = torch.fx.symbolic_trace(folded)
    except Exception as error:  # data-dependent control flow, unsupported Python: keep the copy as it is
        logger.info("batch norm not folded: torch.fx cannot trace %s (%s)", type(model).__name__, error)
        return folded
    modules = dict(traced.named_modules())
    calls: dict[str, int] = {}
    for node in traced.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in list(traced.graph.nodes):
        source = node.args[0] if node.op == "call_module" and node.args else None
        if not (isinstance(source, torch.fx.Node) and source.op == "call_module"):
            continue
        conv, norm = modules[source.target], modules[node.target]
        if (
            _CONVOLUTIONS.get(type(conv)) is not type(norm)
            or not norm.track_running_stats
            or len(source.users) > 1
            or calls[source.target] > 1
            or calls[node.target] > 1
        ):
            continue
        parent, _, name = source.target.rpartition(".")
        setattr(traced.get_submodule(parent), name, fuse_conv_bn_eval(conv, norm))
        node.replace_all_uses_with(source)
        traced.graph.erase_node(node)
    traced.graph.lint()
    traced.delete_all_unused_submodules()
    traced.recompile()
    return traced


def padded_size(size: int, full: int) -> int:
    """Samples a compiled forward pass gets for a batch of ``size``: the next multiple of
    ``ceil(full / PAD_STEPS)``, at most ``full`` (and never less than ``size``)."""
    step = -(-full // PAD_STEPS)
    return max(size, min(full, -(-size // step) * step))


class _Inference(nn.Module):
    """The prepared module: input layout and autocast around the network, logits out."""

    def __init__(self, net: nn.Module, recipe: Recipe, device_type: str) -> None:
        super().__init__()
        self.net = net
        self.channels_last = recipe.channels_last
        self.dtype = recipe.autocast_dtype
        self.device_type = device_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device_type, dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None):
            return self.net(x)


class CompiledForward:
    """A compiled prepared module that logs each new input shape's compilation time.

    Attributes
    ----------
    eager : torch.nn.Module
        The same prepared module without compilation (used to measure memory).
    compile_seconds : dict
        Input shape to the seconds its first call took (compilation and one forward pass).
    """

    def __init__(self, eager: nn.Module, recipe: Recipe) -> None:
        self.eager = eager
        self.name = type(getattr(eager, "net", eager)).__name__
        if recipe.freeze:
            options: dict[str, Any] = {"freezing": True}
            if recipe.cuda_graphs:
                options["triton.cudagraphs"] = True
            self.compiled: Callable[[torch.Tensor], torch.Tensor] = torch.compile(eager, dynamic=False, options=options)
        else:
            self.compiled = torch.compile(eager, dynamic=False, mode=recipe.compile_mode)
        self.compile_seconds: dict[tuple[int, ...], float] = {}
        self.failed: str | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = tuple(x.shape)
        if self.failed is not None:
            return self.eager(x)
        if shape in self.compile_seconds:
            return self.compiled(x)
        began = time.perf_counter()
        try:
            logits = self.compiled(x)
        except torch.OutOfMemoryError:
            raise
        except Exception as error:  # Inductor failed (e.g. no C++ compiler): run the same copy eagerly
            self.failed = f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"
            warnings.warn(f"torch.compile failed, running the prepared model without it: {self.failed}",
                          RuntimeWarning, stacklevel=2)
            return self.eager(x)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        self.compile_seconds[shape] = seconds = time.perf_counter() - began
        logger.info("compiled %s for input shape %s in %.1f s (once per model, shape and process)",
                    self.name, shape, seconds)
        return logits


@dataclass
class _Entry:
    fingerprint: tuple
    forward: Callable[[torch.Tensor], torch.Tensor]


_CACHE: "weakref.WeakKeyDictionary[nn.Module, dict[tuple, _Entry]]" = weakref.WeakKeyDictionary()

#: Integer views of a tensor's bytes, by element size.
_BITS = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _checksum(tensor: torch.Tensor) -> torch.Tensor:
    """``sum_i bits_i * (2 i + 1)`` modulo 2**64 over the raw bits of ``tensor`` (a 0-d int64 tensor on its device).

    Integer arithmetic, so the same content always gives the same value (the order of the sum
    does not matter). Changing one element changes it (an odd number is invertible modulo 2**64,
    so a change of the bits times one is never a multiple of 2**64), and so does swapping two
    different elements.
    """
    flat = tensor.detach().reshape(-1)
    if flat.is_complex():
        flat = torch.view_as_real(flat).reshape(-1)
    bits = flat.view(_BITS[flat.element_size()]).long()
    weights = torch.arange(1, 2 * len(bits), 2, device=bits.device, dtype=torch.long)
    return (bits * weights).sum()


def weights_fingerprint(model: nn.Module) -> tuple:
    """Changes whenever a parameter or buffer of ``model`` is replaced, reshaped or its content changes.

    Content changes are found however they were made, also through ``.data`` (which does not
    count as a modification of the parameter). One integer pass over the weights on their
    device, then one transfer of a checksum per tensor.
    """
    tensors = [*model.parameters(), *model.buffers()]
    sums = [_checksum(t) for t in tensors]
    sums = torch.stack([total.to(sums[0].device) for total in sums]).tolist() if sums else []
    return tuple((t.data_ptr(), tuple(t.shape), t.dtype, total) for t, total in zip(tensors, sums))


def prepare_forward(model: nn.Module, recipe: Recipe, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """The callable that maps a batch to logits under ``recipe``.

    With the default (exact) recipe this is ``model`` itself; with autocast alone, ``model``
    wrapped in autocast. Recipes that change the weights or their layout (``channels_last``,
    ``fold_batchnorm``) or compile return a cached prepared module, or :class:`CompiledForward`,
    built from a copy of ``model`` (see the module docstring).
    """
    device = torch.device(device)
    if recipe == Recipe():
        return model
    if not recipe.copied:
        return _Inference(model, recipe, device.type)
    key = (recipe, str(device))
    fingerprint = weights_fingerprint(model)
    entries = _CACHE.setdefault(model, {})
    entry = entries.get(key)
    if entry is None or entry.fingerprint != fingerprint:
        entries.pop(key, None)  # free the stale copy before building the new one
        net = fold_batchnorm(model) if recipe.fold_batchnorm else copy.deepcopy(model).eval()
        if recipe.channels_last:
            net = net.to(memory_format=torch.channels_last)
        prepared = _Inference(net, recipe, device.type).eval()
        entry = entries[key] = _Entry(fingerprint, CompiledForward(prepared, recipe) if recipe.compiled else prepared)
    return entry.forward


@contextlib.contextmanager
def compilation_messages_on_stderr() -> Iterator[None]:
    """While the block runs, show this module's INFO messages (compilation times) on stderr, and not
    also on stdout through the command line's handler; for the command line."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
