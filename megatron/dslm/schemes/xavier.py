"""Xavier (Glorot normal) per projection; embeddings and heads at sqrt(1/d) as in the reference's figures.

Today's decoder shape: K and V use their GQA fan-out groups * head_dim; a gated FFN's gate half is its own
d -> f projection, so it gets fc1's Xavier std; an untied output layer sqrt(1/d) like the other heads.
"""

from __future__ import annotations

import math

from .common import READS_XAVIER, Scheme, build_layers, make_table, untied_output_std, xavier_layer_stds
from ..contract import InitTable, ModelArch


def xavier_table(arch: ModelArch) -> InitTable:
    layer_stds = xavier_layer_stds(arch)
    unit = 1.0 / math.sqrt(arch.hidden_size)
    return make_table("xavier", unit, unit, build_layers(arch, lambda n: layer_stds),
                      output_layer_std=untied_output_std(arch, unit))


SCHEME = Scheme("xavier", xavier_table, READS_XAVIER)
