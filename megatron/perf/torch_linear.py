"""Tensor-parallel linears that call ``torch.nn.functional.linear`` when there is nothing to communicate.

Flag: ``--linear-impl torch`` (``megatron`` = stock). Replaces: ``ColumnParallelLinear`` /
``RowParallelLinear``'s ``LinearWithGradAccumulationAndAsyncCommunication`` autograd Function and the identity
region functions (Python autograd nodes even at TP = 1), plus the separate bias add after ``skip_bias_add``.
Exactness: <= 1e-6 relative in fp32 (the bias is added inside the GEMM instead of after it); forward and
gradients are compared with megatron-core's path in tests/perf/test_torch_linear.py. Applies when a linear has
no tensor-parallel partner: TP = 1, no sequence parallelism, no expert communication, no fused gradient
accumulation, no deferred embedding wgrad. Everywhere else the subclasses take megatron's own path unchanged.

On the fast path the forward is ``F.linear(x, W, b)`` with native autograd and ``None`` as the separate bias;
megatron-core's consumers (bias-dropout-add, the MLP's bias + activation) accept ``None``. The subclasses add
no parameters or buffers and override only ``forward``, so state dicts, sharded checkpoints and the init code
see the same modules.

How they get in: the transformer layers' linears through the layer spec (:func:`with_torch_linears`); the
linears megatron-core builds inline in the model constructor (``GPTModel`` / ``BertModel``'s
``output_layer``), which no spec reaches, by :func:`use_torch_linears`.
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
import torch.nn.functional as F

from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear
from megatron.core.transformer.spec_utils import ModuleSpec


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


class _DecidesPathOnce:
    """Mixin: decide once, from the built layer, whether it takes the ``F.linear`` path or megatron's."""

    _torch_path: bool = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._choose_path()

    def _choose_path(self) -> None:
        self._torch_path = _torch_path_possible(self)


class TorchColumnParallelLinear(_DecidesPathOnce, ColumnParallelLinear):
    """``ColumnParallelLinear`` that runs ``F.linear`` (bias folded when allowed) on its communication-free path."""

    feeds_bias_activation = False  # the MLP's fc1: megatron may fuse this layer's bias with the activation
    _fold_bias: bool = False

    def _choose_path(self) -> None:
        """Also whether the bias goes in the GEMM (not where megatron fuses it with the activation)."""
        super()._choose_path()
        self._fold_bias = not (self.feeds_bias_activation and self.config.bias_activation_fusion)

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


class TorchMLPInputLinear(TorchColumnParallelLinear):
    """The MLP's ``linear_fc1``: hands its bias back when megatron fuses bias + activation itself."""

    feeds_bias_activation = True


class TorchRowParallelLinear(_DecidesPathOnce, RowParallelLinear):
    """``RowParallelLinear`` that runs ``F.linear`` with the bias folded in on its communication-free path."""

    def forward(self, input_: torch.Tensor):
        if not self._torch_path or not self.input_is_parallel or _offloading(self.config):
            return super().forward(input_)
        return F.linear(input_, self.weight, self.bias), None


# Stock class in a local layer spec -> the subclass that replaces it there.
_SPEC_LINEARS = {
    ("self_attention", "linear_qkv"): (ColumnParallelLinear, TorchColumnParallelLinear),
    ("self_attention", "linear_proj"): (RowParallelLinear, TorchRowParallelLinear),
    ("mlp", "linear_fc1"): (ColumnParallelLinear, TorchMLPInputLinear),
    ("mlp", "linear_fc2"): (RowParallelLinear, TorchRowParallelLinear),
}


def with_torch_linears(base: ModuleSpec) -> ModuleSpec:
    """A copy of a local transformer-layer spec whose qkv, proj, fc1 and fc2 are the subclasses above.

    Only slots that hold megatron's stock class are changed (a Transformer Engine or custom linear is kept);
    ``base`` itself is not modified.
    """
    submodules = copy.copy(base.submodules)
    for (block, slot), (stock, ours) in _SPEC_LINEARS.items():
        sub_spec = getattr(submodules, block, None)
        if not isinstance(sub_spec, ModuleSpec) or getattr(sub_spec.submodules, slot, None) is not stock:
            continue
        sub_spec = copy.copy(sub_spec)
        sub_spec.submodules = copy.copy(sub_spec.submodules)
        setattr(sub_spec.submodules, slot, ours)
        setattr(submodules, block, sub_spec)
    return ModuleSpec(module=base.module, params=dict(base.params or {}), submodules=submodules,
                      metainfo=dict(getattr(base, "metainfo", None) or {}))


def use_torch_linears(model: torch.nn.Module) -> int:
    """Switch the stock TP linears left in a built model to the subclasses; returns how many take the fast path.

    The one ``__class__`` change of this path: ``GPTModel`` and ``BertModel`` construct their ``output_layer``
    inline as ``tensor_parallel.ColumnParallelLinear``, with no spec or class argument to put a subclass in.
    Linears built from a spec (:func:`with_torch_linears`) are already the subclasses and are left alone.
    Exact for the same reason the subclasses are: no new state, only ``forward`` differs.
    """
    count = 0
    for name, module in model.named_modules():
        if type(module) is ColumnParallelLinear:
            module.__class__ = TorchMLPInputLinear if name.endswith("linear_fc1") else TorchColumnParallelLinear
        elif type(module) is RowParallelLinear:
            module.__class__ = TorchRowParallelLinear
        else:
            continue
        module._choose_path()
        count += int(module._torch_path)
    return count
