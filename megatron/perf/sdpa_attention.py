"""Core attention through ``torch.nn.functional.scaled_dot_product_attention`` for the local (non-TE) spec.

Flag: ``--attention-backend {auto,sdpa}`` (``local`` = stock). Replaces: megatron-core's unfused
``DotProductAttention`` core (baddbmm scores, Python softmax, dropout, bmm), which materialises the
[b, np, s, s] scores. Exactness: <= 1e-6 relative in fp32 on every real token, forward and gradients
(tests/perf/test_sdpa_attention.py). Applies to the local layer spec with causal or padding masks; packed
sequences, attention bias and softmax offsets raise. Same inputs/outputs as ``DotProductAttention``
([sq, b, np, hn] -> [sq, b, np·hn]); the scores are never formed, so :mod:`megatron.dslm.mcore.observers`
recomputes them from Q and K on logged steps only.

It goes in through the layer spec for GPT and BERT alike (:func:`with_sdpa_core_attention`). BERT also needs
:class:`SDPABertModel`: ``BertModel`` picks its attention-mask layout by comparing the spec's core-attention
class *by identity* with ``DotProductAttention`` and treats anything else as Transformer Engine.
"""

from __future__ import annotations

import copy

import torch

from megatron.core import tensor_parallel
from megatron.core.models.bert.bert_model import BertModel
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.enums import AttnBackend, AttnMaskType
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules


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
    """A copy of a local layer spec whose self-attention core is :class:`SDPAttention` (``base`` is unchanged)."""
    submodules = copy.copy(base.submodules)
    attn = copy.copy(submodules.self_attention)
    attn_sub = copy.copy(attn.submodules)
    attn_sub.core_attention = SDPAttention
    attn.submodules = attn_sub
    submodules.self_attention = attn
    return ModuleSpec(module=base.module, params=dict(base.params or {}), submodules=submodules,
                      metainfo=dict(getattr(base, "metainfo", None) or {}))


def _core_attention(spec):
    """The core-attention class of a layer spec, or of a block spec's first layer (None if there is none)."""
    if isinstance(spec, TransformerBlockSubmodules):
        if not spec.layer_specs:
            return None
        spec = spec.layer_specs[0]
    attn = getattr(getattr(spec, "submodules", None), "self_attention", None)
    return getattr(getattr(attn, "submodules", None), "core_attention", None)


class SDPABertModel(BertModel):
    """``BertModel`` that accepts :class:`SDPAttention` as its core: the local core's [b, 1, s, s] mask.

    The stock check sends every core but ``DotProductAttention`` itself down its Transformer Engine branch.
    """

    def _sanity_check_attention_and_get_attn_mask_dimension(self) -> str:
        core = _core_attention(self.transformer_layer_spec)
        if not (isinstance(core, type) and issubclass(core, SDPAttention)):
            return super()._sanity_check_attention_and_get_attn_mask_dimension()
        backend = self.config.attention_backend
        if backend not in (AttnBackend.local, AttnBackend.auto):
            raise ValueError(f"the SDPA core attention is a local core: config.attention_backend must be local "
                             f"or auto, got {backend}")
        return "b1ss"
