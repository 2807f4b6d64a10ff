"""DS-Init (Zhang, Titov, Sennrich 2019, "Improving Deep Transformer with Depth-Scaled Initialization"):
Xavier shrunk by 1/sqrt(l) in layer l, so deeper residual branches start smaller.

Today's decoder shape: every projection of the layer shrinks, the gate half of a gated FFN included (it is one
of the layer's linear maps); GQA and the untied output layer follow Xavier (the output layer is not in a layer).
"""

from __future__ import annotations

import dataclasses
import math

from ..contract import InitTable, ModelArch
from .xavier import xavier_table
from .common import READS_XAVIER, Scheme

_LINEAR_ROLES = ("query_std", "key_std", "value_std", "attn_proj_std", "fc1_std", "fc2_std", "gate_std")


def dsinit_table(arch: ModelArch) -> InitTable:
    table = xavier_table(arch)
    layers = tuple(
        dataclasses.replace(
            layer, **{role: getattr(layer, role) / math.sqrt(layer.layer_number)
                      for role in _LINEAR_ROLES if getattr(layer, role) is not None}
        )
        for layer in table.layers
    )
    return dataclasses.replace(table, scheme="dsinit", layers=layers)


SCHEME = Scheme("dsinit", dsinit_table, READS_XAVIER)
