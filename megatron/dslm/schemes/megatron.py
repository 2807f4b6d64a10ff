"""Megatron-LM default init: N(0, init_method_std^2) everywhere, output layers / sqrt(2N) (GPT-2 style).

Today's decoder shape as megatron-core initialises it: the whole fc1 (gate and up halves of a gated FFN) and
the K/V rows of a GQA projection take init_method_std like every input projection; an untied output layer
takes init_method_std too (megatron-core uses ``init_method`` for it); RoPE has no table.
"""

from __future__ import annotations

import math

from .common import READS_ALWAYS, Scheme, build_layers, make_table, untied_output_std
from ..contract import InitTable, ModelArch


def megatron_table(arch: ModelArch) -> InitTable:
    """The output projections (attention linear_proj, fc2) add into the residual 2N times: scale by 1/sqrt(2N)."""
    std = arch.init_method_std
    out_std = std / math.sqrt(2.0 * arch.num_layers)
    layer_stds = dict(query_std=std, key_std=std, value_std=std, attn_proj_std=out_std, fc1_std=std, fc2_std=out_std,
                      gate_std=std if arch.gated_linear_unit else None)
    return make_table("megatron", std, std, build_layers(arch, lambda n: layer_stds),
                      output_layer_std=untied_output_std(arch, std))


SCHEME = Scheme("megatron", megatron_table, READS_ALWAYS | {"init_method_std"})
