"""The fast training step: compiled model, CUDA graphs, bf16, ``channels_last``, fused SGD.

:func:`catrs_plugin.train.loop.train` takes every option from its
:class:`~catrs_plugin.train.loop.TrainConfig`; :func:`~catrs_plugin.train.loop.fast_config` turns them all on:

* ``amp="bf16"``: the loss under bfloat16 autocast (weights, gradients and the optimizer
  stay in fp32);
* ``channels_last``: model and inputs in the ``channels_last`` memory format;
* ``fused``: the fused SGD kernel (on CUDA);
* ``compile``: the model through ``torch.compile`` (:func:`compiled_for_training`), in mode
  ``"reduce-overhead"`` on CUDA, which records the compiled forward and backward passes as
  CUDA graphs (Inductor's CUDA graph trees) so that a step no longer pays one kernel launch
  per operation; ``"default"`` on the CPU.

Data that fits in a quarter of the free GPU memory is moved there once (see ``train``), and
none of the methods' losses waits for the GPU within a step (no ``.item()``, no boolean
selection whose size the host must know): the host queues steps ahead of the device.

The losses compute the same functions on every path; only the rounding differs (bfloat16
keeps 8 bits of mantissa; compiled and fused kernels sum in other orders), and
``tests/test_fast_training.py`` checks the losses against the fp32 path on fixed inputs.
"""

from __future__ import annotations

import torch
from torch import nn

#: ``TrainConfig.compile`` values: ``torch.compile`` modes.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

#: Modes that record CUDA graphs (on CUDA), which need a mark at the start of every step.
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def compiled_for_training(net: nn.Module, mode: str | None) -> nn.Module:
    """``net`` through ``torch.compile(mode=mode, dynamic=False)``, or ``net`` itself for ``None``.

    The compiled module shares the parameters and buffers of ``net`` (checkpoints keep
    saving ``net``'s own state dict). Each input shape and mode of use (train mode; eval mode
    with frozen parameters, as in the methods' attacks) compiles once; the last, smaller
    batch of an epoch adds one more shape.
    """
    if mode is None:
        return net
    return torch.compile(net, mode=mode, dynamic=False)


def begin_step(mode: str | None, device: torch.device) -> None:
    """Tell CUDA graph trees that a new optimizer step begins (its earlier outputs may be reused)."""
    if mode in CUDA_GRAPH_MODES and device.type == "cuda":
        torch.compiler.cudagraph_mark_step_begin()
