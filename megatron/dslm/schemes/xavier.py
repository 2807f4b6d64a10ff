"""Xavier (Glorot normal) per projection; embeddings and heads at sqrt(1/d) as in the reference's figures."""

from __future__ import annotations

import math

from .common import READS_XAVIER, Scheme, build_layers, make_table, xavier_layer_stds
from ..contract import InitTable, ModelArch


def xavier_table(arch: ModelArch) -> InitTable:
    layer_stds = xavier_layer_stds(arch)
    unit = 1.0 / math.sqrt(arch.hidden_size)
    return make_table("xavier", unit, unit, build_layers(arch, lambda n: layer_stds))


SCHEME = Scheme("xavier", xavier_table, READS_XAVIER)
