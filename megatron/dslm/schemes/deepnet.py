"""DeepNet (Wang et al. 2022, "DeepNet: Scaling Transformers to 1,000 Layers"): Post-LN LN(alpha x + F(x)).

alpha = (2N)^(1/4) up-weights the skip so each update moves the output by O(1) regardless of depth;
V, O and FFN weights are Xavier times (8N)^(-1/4). Q and K keep Xavier (they do not scale the output).

Gated FFN: the up and down halves are shrunk (the path the output scales with, as fc1/fc2 of the classic FFN);
the gate keeps Xavier like Q and K: it only modulates, and shrinking it too would make the branch scale as
(8N)^(-3/4) instead of DeepNet's (8N)^(-1/2). GQA and the untied output layer follow Xavier.
"""

from __future__ import annotations

import dataclasses

from .common import READS_XAVIER, Scheme, xavier_layer_stds
from ..contract import InitTable, ModelArch
from .xavier import xavier_table


def deepnet_table(arch: ModelArch) -> InitTable:
    n = arch.num_layers
    shrink = (8.0 * n) ** -0.25
    base = xavier_layer_stds(arch)
    layer_stds = dict(base)
    for role in ("value_std", "attn_proj_std", "fc1_std", "fc2_std"):
        layer_stds[role] = base[role] * shrink
    # alpha only makes sense before a LayerNorm: on a Pre-LN stack the skip would grow as alpha^(2N).
    alpha = (2.0 * n) ** 0.25 if arch.post_ln else 1.0
    notes = () if arch.post_ln else ("deepnet alpha is a Post-LN rule; Pre-LN keeps lambda = 1",)
    table = xavier_table(arch)
    layers = tuple(
        dataclasses.replace(layer, attn_lambda=alpha, mlp_lambda=alpha, **layer_stds) for layer in table.layers
    )
    return dataclasses.replace(table, scheme="deepnet", layers=layers, notes=notes)


SCHEME = Scheme("deepnet", deepnet_table, READS_XAVIER)
