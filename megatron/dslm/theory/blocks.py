"""Composite blocks: FFN, attention sub-layer, Pre-LN and Post-LN transformer layers (theory.md, "Blocks").

A layer's forward returns its output ``Moments`` and a ``LayerTrace`` of the intermediate moments its
backward needs; ``*_backward`` maps the gradient at the layer output to the gradient at its input.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..schemes.table import LayerInit, ModelArch
from .activations import activation, activation_backward
from .attention import attention_logit_var, multi_head_attention, multi_head_attention_backward
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
from .moments import GradMoments, Moments


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


def _attention_branch(x: Moments, layer: LayerInit, arch: ModelArch) -> Moments:
    out = multi_head_attention(
        x, arch.hidden_size, arch.num_attention_heads, arch.head_dim, layer.query_std, layer.key_std,
        layer.value_std, layer.attn_proj_std, arch.seq_length, arch.attention_dropout, arch.model_type == "gpt",
    )
    return dropout(out, arch.hidden_dropout)


def _attention_branch_backward(grad: GradMoments, x: Moments, layer: LayerInit, arch: ModelArch) -> GradMoments:
    g = dropout_backward(grad, arch.hidden_dropout)
    return multi_head_attention_backward(
        g, x, arch.hidden_size, arch.num_attention_heads, arch.head_dim, layer.query_std, layer.key_std,
        layer.value_std, layer.attn_proj_std, arch.seq_length, arch.attention_dropout, arch.model_type == "gpt",
    )


def _mlp_branch(x: Moments, layer: LayerInit, arch: ModelArch) -> Moments:
    out = ffn(x, arch.hidden_size, arch.ffn_size, layer.fc1_std, layer.fc2_std, arch.activation)
    return dropout(out, arch.hidden_dropout)


def _mlp_branch_backward(grad: GradMoments, x: Moments, layer: LayerInit, arch: ModelArch) -> GradMoments:
    g = dropout_backward(grad, arch.hidden_dropout)
    return ffn_backward(g, x, arch.hidden_size, arch.ffn_size, layer.fc1_std, layer.fc2_std, arch.activation)


def _pre_ln_sublayer(x, layer, arch, branch, lambda_, beta) -> SublayerTrace:
    normed = layernorm(x, arch.hidden_size)
    out = branch(normed, layer, arch)
    return SublayerTrace(x, normed, out, residual_merge(x, out, lambda_, beta), lambda_, beta)


def _pre_ln_sublayer_backward(grad, trace: SublayerTrace, layer, arch, branch_backward) -> GradMoments:
    g = branch_backward(grad, trace.branch_in, layer, arch)
    g = layernorm_backward(g, trace.x, arch.hidden_size)
    return residual_merge_backward(grad, g, trace.lambda_, trace.beta)


def pre_ln_layer(x: Moments, layer: LayerInit, arch: ModelArch) -> LayerTrace:
    """x + attn(LN(x)), then + mlp(LN(.)), each merge lambda * skip + beta * branch."""
    attn = _pre_ln_sublayer(x, layer, arch, _attention_branch, layer.attn_lambda, layer.attn_beta)
    mlp = _pre_ln_sublayer(attn.merged, layer, arch, _mlp_branch, layer.mlp_lambda, layer.mlp_beta)
    logit_var = attention_logit_var(attn.branch_in, arch.hidden_size, layer.query_std, layer.key_std)
    return LayerTrace(attn, mlp, logit_var, mlp.merged)


def pre_ln_layer_backward(grad: GradMoments, trace: LayerTrace, layer: LayerInit, arch: ModelArch) -> GradMoments:
    g = _pre_ln_sublayer_backward(grad, trace.mlp, layer, arch, _mlp_branch_backward)
    return _pre_ln_sublayer_backward(g, trace.attn, layer, arch, _attention_branch_backward)


def _post_ln_sublayer(x, layer, arch, branch, lambda_, beta):
    out = branch(x, layer, arch)
    merged = residual_merge(x, out, lambda_, beta)
    return SublayerTrace(x, x, out, merged, lambda_, beta), layernorm(merged, arch.hidden_size)


def _post_ln_sublayer_backward(grad, trace: SublayerTrace, layer, arch, branch_backward) -> GradMoments:
    # The residual gradient below a LayerNorm is already orthogonal to the directions the next one
    # removes, except for the part the branch added (share beta^2 var_F / var_merged).
    branch_share = trace.beta**2 * trace.branch_out.var / trace.merged.var
    g = layernorm_backward(grad, trace.merged, arch.hidden_size, projected_share=branch_share)
    g_branch = branch_backward(g, trace.branch_in, layer, arch)
    return residual_merge_backward(g, g_branch, trace.lambda_, trace.beta)


def post_ln_layer(x: Moments, layer: LayerInit, arch: ModelArch) -> LayerTrace:
    """LN(lambda x + beta attn(x)), then LN(lambda y + beta mlp(y)) (original BERT / DeepNet ordering)."""
    attn, normed = _post_ln_sublayer(x, layer, arch, _attention_branch, layer.attn_lambda, layer.attn_beta)
    mlp, out = _post_ln_sublayer(normed, layer, arch, _mlp_branch, layer.mlp_lambda, layer.mlp_beta)
    logit_var = attention_logit_var(x, arch.hidden_size, layer.query_std, layer.key_std)
    return LayerTrace(attn, mlp, logit_var, out)


def post_ln_layer_backward(grad: GradMoments, trace: LayerTrace, layer: LayerInit, arch: ModelArch) -> GradMoments:
    g = _post_ln_sublayer_backward(grad, trace.mlp, layer, arch, _mlp_branch_backward)
    return _post_ln_sublayer_backward(g, trace.attn, layer, arch, _attention_branch_backward)
