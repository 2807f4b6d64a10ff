"""Simplified DSLM (a reading of the paper's "simple" variant; docs/theory.md, "DeepScaleLM init"): keep the
lambda/beta residual scaling, drop the correlation tracking. Every linear layer gets sigma^2 = 1/d, the
embedding tables sum to unit variance (each 1/T), heads 1/d, logits scaled by 1/sqrt(sigma_e^2 d). Branch
outputs are then only O(1), not exactly 1; lambda^2 + beta^2 = 1 with small beta^2 keeps the stream near unit
variance anyway.

Today's decoder shape: the gate half of a gated FFN and the GQA K/V rows also get 1/d (the SwiGLU branch then
has variance (f/d) E[SiLU(a)^2] ~ 0.95 for f = 8d/3, GeGLU ~ 1.13); RoPE has no table; an untied output
layer gets 1/d with logit scale 1 (unit-variance logits)."""

from __future__ import annotations

import math

from .common import READS_ALWAYS, READS_RESIDUAL, Scheme, build_layers, make_table, residual_scalars
from ..contract import InitTable, ModelArch


def dslm_simplified_table(arch: ModelArch) -> InitTable:
    lambda_, beta = residual_scalars(arch)
    unit = 1.0 / math.sqrt(arch.hidden_size)
    embedding_std = math.sqrt(1.0 / arch.num_embedding_tables)
    layer_stds = dict(query_std=unit, key_std=unit, value_std=unit, attn_proj_std=unit, fc1_std=unit, fc2_std=unit,
                      gate_std=unit if arch.gated_linear_unit else None)
    untied = arch.untie_embeddings_and_output_weights
    return make_table(
        "dslm_simplified",
        embedding_std,
        unit,
        build_layers(arch, lambda n: layer_stds, lambda_, beta),
        lm_logit_scale=1.0 if untied else 1.0 / math.sqrt(embedding_std**2 * arch.hidden_size),
        output_layer_std=unit if untied else None,
        embedding_layernorm=arch.post_ln,
    )


SCHEME = Scheme("dslm_simplified", dslm_simplified_table,
                READS_ALWAYS | READS_RESIDUAL | {"hidden_size", "model_type", "num_tokentypes"})
