"""Whole-model moment profile: embeddings, then every layer forward, then the gradient back down.

``predict_profile(arch, table)`` reads the same ``InitTable`` the model-init code applies, so what it
predicts is what ``apply_init_table`` builds (docs/theory.md, "Blocks and residual merges", "DeepScaleLM init").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from ..contract import InitTable, ModelArch
from .blocks import post_ln_layer, post_ln_layer_backward, pre_ln_layer, pre_ln_layer_backward
from .layers import dropout, embeddings, layernorm
from .moments import GradMoments, Moments


@dataclass(frozen=True)
class LayerProfile:
    """Predicted moments at the output of one layer (``layer_number`` 1-based).

    ``grad_var`` is the variance of dL/d(layer output), scaled so the last layer's is ``top_grad_var``.
    ``pre_norm_var`` is the variance before the layer's final LayerNorm for Post-LN (the informative
    quantity there: the output itself is normalised) and equals ``forward_var`` for Pre-LN.
    """

    layer_number: int
    forward_var: float
    forward_corr: float
    grad_var: float
    grad_corr: float
    pre_norm_var: float
    attention_logit_var: float
    attn_branch_var: float
    mlp_branch_var: float


@dataclass(frozen=True)
class Profile:
    """Per-layer profile plus the embedding output (layer 0) and the gradient reaching it."""

    arch: ModelArch
    scheme: str
    embedding: Moments
    embedding_grad_var: float
    layers: Tuple[LayerProfile, ...]

    @property
    def final(self) -> LayerProfile:
        return self.layers[-1]

    def column(self, name: str) -> Tuple[float, ...]:
        """One field over depth, e.g. ``profile.column("forward_var")``."""
        return tuple(getattr(layer, name) for layer in self.layers)


def embedding_moments(arch: ModelArch, table: InitTable) -> Moments:
    """Summed word + learned position (+ token type) lookups, optional LayerNorm (Post-LN BERT), then dropout.

    RoPE and "none" have no position table: the word table alone."""
    stds = [table.word_embedding_std]
    if arch.position_embedding_type == "learned_absolute":
        stds.append(table.position_embedding_std)
    if arch.num_tokentypes > 0:
        stds.append(table.tokentype_embedding_std)
    summed = Moments(0.0, sum(std**2 for std in stds), arch.embedding_corr)
    if table.embedding_layernorm:
        summed = layernorm(summed, arch.hidden_size)
    return dropout(summed, arch.hidden_dropout)


def predict_profile(
    arch: ModelArch, table: InitTable, top_grad_corr: float = 0.0, top_grad_var: float = 1.0
) -> Profile:
    """Predict forward variance/correlation and backward gradient variance at every layer's output.

    Args:
        arch: the model shape, dropout, Pre-/Post-LN, activation and embedding correlation r0.
        table: per-weight stds and residual lambda/beta (``build_init_table(name, arch)``).
        top_grad_corr: token correlation of dL/d(last layer output); 0 models an unstructured loss.
        top_grad_var: the last layer's gradient variance (the profile is linear in it).
    Returns:
        ``Profile`` with one ``LayerProfile`` per layer.
    """
    if len(table.layers) != arch.num_layers:
        raise ValueError(f"table has {len(table.layers)} layers, arch has {arch.num_layers}")
    forward, backward = (post_ln_layer, post_ln_layer_backward) if arch.post_ln else (pre_ln_layer, pre_ln_layer_backward)
    x = embedding_moments(arch, table)
    embedded = x
    traces = []
    for layer in table.layers:
        trace = forward(x, layer, arch)
        traces.append(trace)
        x = trace.out
    grads = [None] * arch.num_layers
    g = GradMoments(top_grad_var, top_grad_corr)
    fresh, along = 1.0, 0.0  # Post-LN bookkeeping: the top gradient is independent of the activations
    for idx in range(arch.num_layers - 1, -1, -1):
        grads[idx] = g
        if arch.post_ln:
            g, fresh, along = backward(g, traces[idx], table.layers[idx], arch, fresh, along)
        else:
            g = backward(g, traces[idx], table.layers[idx], arch)
    layers = tuple(
        LayerProfile(
            layer_number=idx + 1,
            forward_var=trace.out.var,
            forward_corr=trace.out.corr,
            grad_var=grads[idx].var,
            grad_corr=grads[idx].corr,
            pre_norm_var=trace.mlp.merged.var,
            attention_logit_var=trace.attention_logit_var,
            attn_branch_var=trace.attn.branch_out.var,
            mlp_branch_var=trace.mlp.branch_out.var,
        )
        for idx, trace in enumerate(traces)
    )
    return Profile(arch, table.scheme, embedded, g.var, layers)
