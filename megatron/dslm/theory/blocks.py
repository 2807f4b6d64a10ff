"""Composite blocks: FFN, attention sub-layer, Pre-LN and Post-LN transformer layers (docs/theory.md, "Blocks and residual merges").

A layer's forward returns its output ``Moments`` and a ``LayerTrace`` of the intermediate moments its
backward needs; ``*_backward`` maps the gradient at the layer output to the gradient at its input.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..contract import LayerInit, ModelArch
from .activations import activation, activation_backward
from .attention import AttentionConfig, attention_logit_var, multi_head_attention, multi_head_attention_backward
from .layers import (
    dropout,
    dropout_backward,
    layernorm,
    layernorm_backward,
    linear,
    linear_backward,
    residual_merge,
    residual_merge_backward,
)
from .gated import GatedFFN, gated_ffn, gated_ffn_backward
from .moments import GradMoments, Moments
from .rmsnorm import rmsnorm, rmsnorm_backward
from .rotary import Rotary


def norm(x: Moments, arch: ModelArch) -> Moments:
    """The block's normalisation (``arch.normalization``: LayerNorm or RMSNorm), unit gain."""
    return rmsnorm(x, arch.hidden_size) if arch.normalization == "RMSNorm" else layernorm(x, arch.hidden_size)


def norm_backward(grad: GradMoments, x: Moments, arch: ModelArch) -> GradMoments:
    if arch.normalization == "RMSNorm":
        return rmsnorm_backward(grad, x, arch.hidden_size)
    return layernorm_backward(grad, x, arch.hidden_size)


def ffn(x: Moments, hidden_size: int, ffn_size: int, fc1_std: float, fc2_std: float, activation_name: str) -> Moments:
    """fc2(act(fc1(x))): with ReLU and ffn_size = 4d the variance factor is 2 d^2 sigma_1^2 sigma_2^2."""
    pre = linear(x, hidden_size, fc1_std)
    post = activation(pre, activation_name)
    return linear(post, ffn_size, fc2_std)


def ffn_backward(
    grad: GradMoments, x: Moments, hidden_size: int, ffn_size: int, fc1_std: float, fc2_std: float, activation_name: str
) -> GradMoments:
    pre = linear(x, hidden_size, fc1_std)
    g = linear_backward(grad, hidden_size, fc2_std)
    g = activation_backward(g, pre, activation_name)
    return linear_backward(g, ffn_size, fc1_std)


def ffn_corr_map(corr: float, activation_name: str, pre_activation_var: float) -> float:
    """Token correlation at the FFN output for input correlation ``corr`` (uncentred: what fc2 keeps).

    ReLU: corr + (sqrt(1 - corr^2) - corr arccos corr) / pi, independent of the scale; GeLU depends on
    the pre-activation variance ``pre_activation_var`` = d sigma_1^2 E[x^2].
    """
    post = activation(Moments(0.0, pre_activation_var, corr), activation_name)
    return post.second_moment_corr


@dataclass(frozen=True)
class SublayerTrace:
    """Moments around one residual sub-layer (attention or MLP)."""

    x: Moments  # sub-layer input (residual stream)
    branch_in: Moments  # after the Pre-LN LayerNorm (Pre-LN) or x itself (Post-LN)
    branch_out: Moments  # after the branch's hidden dropout, before beta
    merged: Moments  # lambda x + beta branch_out (Post-LN: before its LayerNorm)
    lambda_: float
    beta: float


@dataclass(frozen=True)
class LayerTrace:
    attn: SublayerTrace
    mlp: SublayerTrace
    attention_logit_var: float
    out: Moments


def attention_config(layer: LayerInit, arch: ModelArch) -> AttentionConfig:
    """The attention block of ``layer``: causal for GPT, bidirectional for BERT."""
    rope = arch.position_embedding_type == "rope"
    rotary = Rotary(arch.head_dim, arch.rotary_base, arch.rotary_percent) if rope else None
    return AttentionConfig(
        arch.hidden_size, arch.num_attention_heads, arch.head_dim, layer.query_std, layer.key_std,
        layer.value_std, layer.attn_proj_std, arch.seq_length, arch.attention_dropout, arch.model_type == "gpt",
        num_query_groups=arch.query_groups, rotary=rotary,
    )


def _attention_config_for(x: Moments, layer: LayerInit, arch: ModelArch) -> AttentionConfig:
    """``--qk-layernorm`` normalises Q and K per head: equivalent, for every moment, to the stds that give
    unit-variance Q and K for this input, 1 / sqrt(d E[x^2])."""
    cfg = attention_config(layer, arch)
    if not arch.qk_layernorm:
        return cfg
    unit = (arch.hidden_size * x.second_moment) ** -0.5
    return replace(cfg, query_std=unit, key_std=unit)


def _attention_branch(x: Moments, layer: LayerInit, arch: ModelArch) -> Moments:
    return dropout(multi_head_attention(x, _attention_config_for(x, layer, arch)), arch.hidden_dropout)


def _attention_branch_backward(grad: GradMoments, x: Moments, layer: LayerInit, arch: ModelArch) -> GradMoments:
    g = dropout_backward(grad, arch.hidden_dropout)
    return multi_head_attention_backward(g, x, _attention_config_for(x, layer, arch))


def gated_config(layer: LayerInit, arch: ModelArch) -> GatedFFN:
    gate_std = layer.fc1_std if layer.gate_std is None else layer.gate_std
    return GatedFFN(arch.hidden_size, arch.ffn_size, gate_std, layer.fc1_std, layer.fc2_std, arch.activation)


def _mlp_branch(x: Moments, layer: LayerInit, arch: ModelArch) -> Moments:
    if arch.gated_linear_unit:
        out = gated_ffn(x, gated_config(layer, arch))
    else:
        out = ffn(x, arch.hidden_size, arch.ffn_size, layer.fc1_std, layer.fc2_std, arch.activation)
    return dropout(out, arch.hidden_dropout)


def _mlp_branch_backward(grad: GradMoments, x: Moments, layer: LayerInit, arch: ModelArch) -> GradMoments:
    g = dropout_backward(grad, arch.hidden_dropout)
    if arch.gated_linear_unit:
        return gated_ffn_backward(g, x, gated_config(layer, arch))
    return ffn_backward(g, x, arch.hidden_size, arch.ffn_size, layer.fc1_std, layer.fc2_std, arch.activation)


def _pre_ln_sublayer(x, layer, arch, branch, lambda_, beta) -> SublayerTrace:
    normed = norm(x, arch)
    out = branch(normed, layer, arch)
    return SublayerTrace(x, normed, out, residual_merge(x, out, lambda_, beta), lambda_, beta)


def _pre_ln_sublayer_backward(grad, trace: SublayerTrace, layer, arch, branch_backward) -> GradMoments:
    g = branch_backward(grad, trace.branch_in, layer, arch)
    g = norm_backward(g, trace.x, arch)
    return residual_merge_backward(grad, g, trace.lambda_, trace.beta)


def pre_ln_layer(x: Moments, layer: LayerInit, arch: ModelArch) -> LayerTrace:
    """x + attn(LN(x)), then + mlp(LN(.)), each merge lambda * skip + beta * branch."""
    attn = _pre_ln_sublayer(x, layer, arch, _attention_branch, layer.attn_lambda, layer.attn_beta)
    mlp = _pre_ln_sublayer(attn.merged, layer, arch, _mlp_branch, layer.mlp_lambda, layer.mlp_beta)
    cfg = _attention_config_for(attn.branch_in, layer, arch)
    logit_var = attention_logit_var(attn.branch_in, arch.hidden_size, cfg.query_std, cfg.key_std)
    return LayerTrace(attn, mlp, logit_var, mlp.merged)


def pre_ln_layer_backward(grad: GradMoments, trace: LayerTrace, layer: LayerInit, arch: ModelArch) -> GradMoments:
    g = _pre_ln_sublayer_backward(grad, trace.mlp, layer, arch, _mlp_branch_backward)
    return _pre_ln_sublayer_backward(g, trace.attn, layer, arch, _attention_branch_backward)


def _post_ln_sublayer(x, layer, arch, branch, lambda_, beta):
    out = branch(x, layer, arch)
    merged = residual_merge(x, out, lambda_, beta)
    return SublayerTrace(x, x, out, merged, lambda_, beta), norm(merged, arch)


def _post_ln_sublayer_backward(grad, fresh_share, trace: SublayerTrace, layer, arch, branch_backward):
    """Backward through LN(lambda x + beta F(x)); also returns the share of dL/dx born in the branch.

    The LayerNorm Jacobian removes the all-ones and normalised-input directions, 1/d of the variance
    each for a gradient independent of them (the branch-born share ``fresh_share``). The skip-born rest
    is already orthogonal to the LayerNorm above and to ones; of the input direction it only carries
    what the branch above added, beta^2 var_F / (lambda^2 var_x) of 1/d.
    """
    along = getattr(trace, "along_share_above", 0.0)
    removed = 2.0 * fresh_share + along * (1.0 - fresh_share)
    pinned = trace.lambda_**2 * trace.x.var / trace.merged.var  # the normalised skip has exact per-token variance
    g = layernorm_backward(
        grad, trace.merged, arch.hidden_size, projected_share=removed / 2.0, fresh_input_share=1.0 - pinned
    )
    g_branch = branch_backward(g, trace.branch_in, layer, arch)
    merged = residual_merge_backward(g, g_branch, trace.lambda_, trace.beta)
    branch_part = trace.beta**2 * g_branch.var
    return merged, branch_part / merged.var if merged.var > 0 else 1.0


def post_ln_layer(x: Moments, layer: LayerInit, arch: ModelArch) -> LayerTrace:
    """LN(lambda x + beta attn(x)), then LN(lambda y + beta mlp(y)) (original BERT / DeepNet ordering)."""
    attn, normed = _post_ln_sublayer(x, layer, arch, _attention_branch, layer.attn_lambda, layer.attn_beta)
    mlp, out = _post_ln_sublayer(normed, layer, arch, _mlp_branch, layer.mlp_lambda, layer.mlp_beta)
    cfg = _attention_config_for(x, layer, arch)
    logit_var = attention_logit_var(x, arch.hidden_size, cfg.query_std, cfg.key_std)
    return LayerTrace(attn, mlp, logit_var, out)


def post_ln_layer_backward(
    grad: GradMoments, trace: LayerTrace, layer: LayerInit, arch: ModelArch, fresh_share: float = 1.0,
    along_share: float = 0.0,
):
    """Gradient below the layer. ``fresh_share`` / ``along_share`` describe ``grad`` (see the sublayer
    backward); returns (gradient, fresh share, along share) for the layer below."""
    g, fresh = _post_ln_sublayer_backward(grad, fresh_share, _with_along(trace.mlp, along_share), layer, arch, _mlp_branch_backward)
    g, fresh = _post_ln_sublayer_backward(g, fresh, _with_along(trace.attn, _along(trace.mlp)), layer, arch, _attention_branch_backward)
    return g, fresh, _along(trace.attn)


def _along(trace: SublayerTrace) -> float:
    """How much of a skip-born gradient lies along this sublayer's input direction, in units of 1/d."""
    return trace.beta**2 * trace.branch_out.var / (trace.lambda_**2 * trace.x.var)


def _with_along(trace: SublayerTrace, along: float) -> SublayerTrace:
    return _AlongTrace(**{f: getattr(trace, f) for f in SublayerTrace.__dataclass_fields__}, along_share_above=along)


@dataclass(frozen=True)
class _AlongTrace(SublayerTrace):
    along_share_above: float = 0.0
