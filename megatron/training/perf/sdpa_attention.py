"""Core attention through ``torch.nn.functional.scaled_dot_product_attention`` for the local (non-TE) spec.

megatron-core's local ``DotProductAttention`` materialises the [b, np, s, s] scores with baddbmm and a Python
softmax; on CPU (and on GPUs without Transformer Engine) SDPA's fused kernels are markedly faster. Same
inputs/outputs as ``DotProductAttention`` ([sq, b, np, hn] -> [sq, b, np·hn]); the scores are never formed, so
:mod:`megatron.dslm.mcore.observers` recomputes them from Q and K on logged steps only.
"""

from __future__ import annotations

import copy

import torch

from megatron.core import tensor_parallel
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.spec_utils import ModuleSpec


class SDPAttention(DotProductAttention):
    """``DotProductAttention`` with the score/softmax/dropout/context part done by SDPA."""

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        if packed_seq_params is not None or attention_bias is not None:
            raise NotImplementedError("SDPAttention supports neither packed sequences nor attention bias")
        if self.softmax_offset is not None:
            raise NotImplementedError("SDPAttention does not support softmax offsets (attention sinks)")
        heads, groups = self.num_attention_heads_per_partition, self.num_query_groups_per_partition
        if heads // groups > 1:
            key = key.repeat_interleave(heads // groups, dim=2)
            value = value.repeat_interleave(heads // groups, dim=2)
        mask_type = attn_mask_type if attn_mask_type is not None else self.attn_mask_type
        # [s, b, np, hn] -> [b, np, s, hn]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        mask = None
        causal = False
        if attention_mask is not None:
            mask = ~attention_mask  # megatron: True = masked out; SDPA: True = attend
            # A query whose keys are all masked (a pad row of BERT's b1ss mask) would make SDPA return NaN,
            # which poisons the backward pass; let such rows attend everywhere. Their outputs differ from
            # megatron's (uniform attention) but never reach a real token or the masked loss.
            mask = mask | ~mask.any(dim=-1, keepdim=True)
        elif mask_type == AttnMaskType.causal and q.size(2) > 1:
            causal = True
        dropout = self.config.attention_dropout if self.training else 0.0
        scale = self.softmax_scale
        if self.scale_mask_softmax.scale is not None:
            scale = scale * self.scale_mask_softmax.scale
        if dropout > 0.0 and not self.config.sequence_parallel:
            with tensor_parallel.get_cuda_rng_tracker().fork():
                ctx = torch.nn.functional.scaled_dot_product_attention(
                    q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal, scale=scale)
        else:
            ctx = torch.nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal, scale=scale)
        # [b, np, s, hn] -> [s, b, np·hn]
        ctx = ctx.permute(2, 0, 1, 3).contiguous()
        return ctx.view(ctx.size(0), ctx.size(1), -1)


def with_sdpa_core_attention(base: ModuleSpec) -> ModuleSpec:
    """A copy of a local layer spec whose self-attention core is :class:`SDPAttention`."""
    submodules = copy.copy(base.submodules)
    attn = copy.copy(submodules.self_attention)
    attn_sub = copy.copy(attn.submodules)
    attn_sub.core_attention = SDPAttention
    attn.submodules = attn_sub
    submodules.self_attention = attn
    return ModuleSpec(module=base.module, params=dict(base.params or {}), submodules=submodules)


def use_sdpa_core_attention(model: torch.nn.Module) -> int:
    """Switch every megatron ``DotProductAttention`` in a built model to :class:`SDPAttention`; returns the count.

    Needed for BERT: ``BertModel`` picks its attention-mask layout by comparing the spec's core-attention class
    *by identity* with megatron's ``DotProductAttention`` (anything else is assumed to be Transformer Engine),
    so the SDPA core cannot go in through the spec. ``SDPAttention`` adds no state and overrides only
    ``forward``, so changing the class of the built module is exact.
    """
    count = 0
    for module in model.modules():
        if type(module) is DotProductAttention:
            module.__class__ = SDPAttention
            count += 1
    return count
