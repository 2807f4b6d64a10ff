"""Megatron-LM default init: N(0, init_method_std^2) everywhere, output layers / sqrt(2N) (GPT-2 style)."""

from __future__ import annotations

import math

from .common import READS_ALWAYS, Scheme, build_layers, make_table
from ..contract import InitTable, ModelArch


def megatron_table(arch: ModelArch) -> InitTable:
    """The output projections (attention linear_proj, fc2) add into the residual 2N times: scale by 1/sqrt(2N)."""
    std = arch.init_method_std
    out_std = std / math.sqrt(2.0 * arch.num_layers)
    layer_stds = dict(query_std=std, key_std=std, value_std=std, attn_proj_std=out_std, fc1_std=std, fc2_std=out_std)
    return make_table("megatron", std, std, build_layers(arch, lambda n: layer_stds))


SCHEME = Scheme("megatron", megatron_table, READS_ALWAYS | {"init_method_std"})
