"""Tensor-parallel linears that call ``torch.nn.functional.linear`` when there is nothing to communicate.

megatron-core's ``ColumnParallelLinear`` / ``RowParallelLinear`` always go through
``LinearWithGradAccumulationAndAsyncCommunication``, a Python ``autograd.Function`` built to overlap TP
all-reduces and fuse main-grad accumulation, plus identity region functions (also Python autograd nodes) at
TP = 1. They also hand the bias back separately (``skip_bias_add``) so that a later op can add it. On deep,
narrow models every one of those Python nodes and separate bias adds is a visible share of the step (profiled
at 96x64 on CPU: ~45 ms of Python backward and ~27 ms of bias adds per step; see docs/performance.md).

When a linear has no tensor-parallel partner (TP = 1, no sequence parallelism, no expert communication, no
fused gradient accumulation, no deferred embedding wgrad) its forward is simply ``x @ W.T + b``; these
subclasses then call ``F.linear`` with the bias folded in (one GEMM with the bias as its initial value; native
autograd) and return ``None`` as the separate bias. Callers in megatron-core (bias-dropout-add, the MLP's
bias+activation) already accept ``None``. Everything else (TP > 1, SP, TE/apex gradient-accumulation fusion)
takes megatron's own path unchanged. Values equal megatron's within fp32 rounding (the bias is added inside
the GEMM instead of after it); tests/dslm/test_fast_linear.py checks forward and gradients.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear


def _torch_path_possible(module) -> bool:
    """The static conditions under which the layer does no communication and no fused accumulation."""
    tp_group = getattr(module, "tp_group", None)
    tp_size = tp_group.size() if tp_group is not None else 1
    return (tp_size == 1 and not module.sequence_parallel and not module.gradient_accumulation_fusion
            and not getattr(module, "explicit_expert_comm", False)
            and not getattr(module.config, "defer_embedding_wgrad_compute", False))


def _offloading(config) -> bool:
    ctx = getattr(config, "_cpu_offloading_context", None)
    return ctx is not None and getattr(ctx, "inside_context", False)


class TorchColumnParallelLinear(ColumnParallelLinear):
    """``ColumnParallelLinear`` that runs ``F.linear`` (bias folded when allowed) on its communication-free path."""

    _torch_path: bool = False
    _fold_bias: bool = False

    def forward(self, input_: torch.Tensor, weight: Optional[torch.Tensor] = None,
                runtime_gather_output: Optional[bool] = None):
        if not self._torch_path or _offloading(self.config):
            return super().forward(input_, weight, runtime_gather_output)
        if weight is None:
            weight = self.weight
            if weight is None:
                return super().forward(input_, weight, runtime_gather_output)  # raises megatron's error
        elif weight.shape != (self.output_size_per_partition, self.input_size):
            return super().forward(input_, weight, runtime_gather_output)  # raises megatron's error
        if self.skip_bias_add and not self._fold_bias:
            return F.linear(input_, weight), self.bias
        return F.linear(input_, weight, self.bias), None


class TorchRowParallelLinear(RowParallelLinear):
    """``RowParallelLinear`` that runs ``F.linear`` with the bias folded in on its communication-free path."""

    _torch_path: bool = False

    def forward(self, input_: torch.Tensor):
        if not self._torch_path or not self.input_is_parallel or _offloading(self.config):
            return super().forward(input_)
        return F.linear(input_, self.weight, self.bias), None


def use_torch_linears(model: torch.nn.Module) -> int:
    """Switch every stock TP linear of a built model to the subclasses above; returns how many take the fast path.

    Changing ``__class__`` is exact: the subclasses add no parameters or buffers and override only ``forward``,
    so state dicts, sharded checkpoints and the init code see the same modules. The MLP's ``linear_fc1`` bias
    is folded only when megatron would not fuse bias + activation itself (``bias_activation_fusion`` off).
    """
    count = 0
    for name, module in model.named_modules():
        if type(module) is ColumnParallelLinear:
            module.__class__ = TorchColumnParallelLinear
        elif type(module) is RowParallelLinear:
            module.__class__ = TorchRowParallelLinear
        else:
            continue
        module._torch_path = _torch_path_possible(module)
        if isinstance(module, TorchColumnParallelLinear):
            fused_activation = name.endswith("linear_fc1") and module.config.bias_activation_fusion
            module._fold_bias = not fused_activation
        count += int(module._torch_path)
    return count
