"""DeepScaleLM init (Kedia et al. 2024, Sec. 3; docs/theory.md, "DeepScaleLM init"): every block's output at
unit variance.

With unit-variance input (Pre-LN LayerNorm output, or the Post-LN stream):
* embeddings: each of the T tables sigma^2 = (1 - p) / T, so the sum after dropout has variance 1;
* Q, K: sigma^2 = 1/d, logits of unit variance (no softmax saturation);
* V, O: sigma_v^2 sigma_o^2 d^2 corr_l / (1 - p) = 1 with sigma_v = sigma_o, corr_l the correlation the
  attention keeps (averaging tokens keeps only the shared part of V);
* FFN (ReLU): 2 d^2 sigma_1^2 sigma_2^2 = 1 - p with sigma_1 = sigma_2 (f = 4d; other f: d f sigma_1^2
  sigma_2^2 / 2 = 1 - p). GeLU (not in the reference): sigma_1 as for ReLU, sigma_2 from E[GeLU(z)^2];
* pooler, LM-head dense, binary head: 1/d; final hidden state scaled by 1/sqrt(sigma_e^2 d) before the
  tied-embedding logits; residual lambda^2 + beta^2 = 1 with beta^2 = k/N.

Today's decoder shape (docs/theory.md, "Today's decoder block"):
* gated FFN act(x W_g) * (x W_u) W_d (SwiGLU: SiLU, GeGLU: GeLU): gate sigma_g^2 = 1/d (unit pre-activation,
  the gate's nonlinearity at a width-independent scale), up = down std with d f sigma_u^2 sigma_d^2
  E[act(a)^2] = 1 - p, E[act(a)^2] for a ~ N(0, 1) by exact quadrature;
* RoPE: no position table (each of the T tables still 1/T); the attention's kept share corr_l is unchanged
  (rotations keep the logit variance; their lag-smooth decorrelation leaves the softmax moments, measured); GQA: K and V keep 1/d and corr_l (the moments are MHA's);
* RMSNorm: unit second moment like LayerNorm, the correlation recurrence skips LayerNorm's centring anyway;
* untied output layer: sigma_out^2 = 1/d with logit scale 1 (unit-variance logits without a hidden scale).

corr_l (beyond the reference's r_l): the effective correlation of the attention output, corr_l +
E[sum P^2] (1/(1 - p_attn) - corr_l), so that short or causal sequences with little token correlation
(random-token mock data) still get unit variance. It follows the correlation recurrence run by the theory
code: r <- r0 (1 - p); per layer the attention branch's correlation, merge; the FFN map, merge.
"""

from __future__ import annotations

import math
from typing import Tuple

from ..theory.activations import activation
from ..theory.attention import mixing_stats
from ..theory.blocks import ffn_corr_map
from ..theory.gated import gated_corr_map
from ..theory.layers import dropout, residual_merge
from ..theory.moments import Moments
from .common import READS_ALWAYS, READS_RESIDUAL, Scheme, make_table, residual_scalars
from ..contract import InitTable, LayerInit, ModelArch


def dslm_ffn_stds(arch: ModelArch) -> Tuple[float, float]:
    """(fc1_std, fc2_std) giving the FFN output variance 1 - p for unit-variance input."""
    d, f, keep = arch.hidden_size, arch.ffn_size, 1.0 - arch.hidden_dropout
    fc1_var = math.sqrt(2.0 * keep / (f * d))
    pre = Moments(0.0, d * fc1_var, 0.0)
    act_second_moment = activation(pre, arch.activation).second_moment
    fc2_var = keep / (f * act_second_moment)
    return math.sqrt(fc1_var), math.sqrt(fc2_var)


def dslm_gated_stds(arch: ModelArch) -> Tuple[float, float, float]:
    """(gate_std, up_std, down_std) giving the gated FFN output variance 1 - p for unit-variance input."""
    d, f, keep = arch.hidden_size, arch.ffn_size, 1.0 - arch.hidden_dropout
    gate_std = 1.0 / math.sqrt(d)
    act_second_moment = activation(Moments(0.0, 1.0, 0.0), arch.activation).second_moment
    up_std = (keep / (act_second_moment * d * f)) ** 0.25
    return gate_std, up_std, up_std


def _unit_logit_stats(corr: float, arch: ModelArch):
    """Mixing statistics of a unit-logit-variance head (sigma_q^2 = sigma_k^2 = 1/d) at input correlation corr."""
    return mixing_stats(arch.seq_length, arch.model_type == "gpt", round(1.0 - corr, 3))


def attention_effective_corr(corr: float, arch: ModelArch) -> float:
    """Share of the unit input variance a (unit-logit, near-uniform) attention head keeps."""
    stats = _unit_logit_stats(corr, arch)
    return corr + stats.sum_sq * (1.0 / (1.0 - arch.attention_dropout) - corr)


def _attention_output_corr(corr: float, arch: ModelArch) -> float:
    stats = _unit_logit_stats(corr, arch)
    return min(1.0, (corr + (1.0 - corr) * stats.cross) / attention_effective_corr(corr, arch))


def _mlp_output_corr(corr: float, arch: ModelArch) -> float:
    if arch.gated_linear_unit:
        return gated_corr_map(corr, arch.activation, 1.0)
    fc1_std, _ = dslm_ffn_stds(arch)
    return ffn_corr_map(corr, arch.activation, arch.hidden_size * fc1_std**2)


def dslm_layer_corrs(arch: ModelArch) -> Tuple[float, ...]:
    """Token correlation of each layer's input under the DSLM init (unit variance throughout)."""
    lambda_, beta = residual_scalars(arch)
    p = arch.hidden_dropout
    x = dropout(Moments(0.0, 1.0 - p, arch.embedding_corr), p)  # unit variance after dropout
    corrs = []
    for _ in range(arch.num_layers):
        corrs.append(x.corr)
        attn = dropout(Moments(0.0, 1.0 - p, _attention_output_corr(x.corr, arch)), p)
        x = residual_merge(x, attn, lambda_, beta)
        mlp_corr = _mlp_output_corr(x.corr, arch)
        x = residual_merge(x, dropout(Moments(0.0, 1.0 - p, mlp_corr), p), lambda_, beta)
    return tuple(corrs)


def dslm_table(arch: ModelArch) -> InitTable:
    d, keep = arch.hidden_size, 1.0 - arch.hidden_dropout
    lambda_, beta = residual_scalars(arch)
    embedding_std = math.sqrt(keep / arch.num_embedding_tables)
    qk_std = 1.0 / math.sqrt(d)
    untied = arch.untie_embeddings_and_output_weights
    if arch.gated_linear_unit:
        gate_std, fc1_std, fc2_std = dslm_gated_stds(arch)
    else:
        (fc1_std, fc2_std), gate_std = dslm_ffn_stds(arch), None
    layers = []
    for number, corr in enumerate(dslm_layer_corrs(arch), start=1):
        vo_std = (keep / attention_effective_corr(corr, arch)) ** 0.25 / math.sqrt(d)
        layers.append(
            LayerInit(
                layer_number=number, query_std=qk_std, key_std=qk_std, value_std=vo_std, attn_proj_std=vo_std,
                fc1_std=fc1_std, fc2_std=fc2_std, gate_std=gate_std,
                attn_lambda=lambda_, attn_beta=beta, mlp_lambda=lambda_, mlp_beta=beta,
            )
        )
    return make_table(
        "dslm",
        embedding_std,
        qk_std,
        layers,
        lm_logit_scale=1.0 if untied else 1.0 / math.sqrt(embedding_std**2 * d),
        output_layer_std=qk_std if untied else None,
        embedding_layernorm=arch.post_ln,
        notes=(f"beta^2={beta**2:.6g} lambda^2={lambda_**2:.6g}", f"embedding_corr r0={arch.embedding_corr}"),
    )


SCHEME = Scheme("dslm", dslm_table, READS_ALWAYS | READS_RESIDUAL | {
    "hidden_size", "ffn_hidden_size", "seq_length", "hidden_dropout", "attention_dropout",
    "activation", "model_type", "num_tokentypes", "embedding_corr",
})
