"""Helpers shared by the scheme modules: residual lambda/beta and per-layer table assembly."""

from __future__ import annotations

import math
from typing import Callable, Tuple

from ..contract import InitTable, LayerInit, ModelArch

RESIDUAL_TOLERANCE = 1e-6


def residual_scalars(arch: ModelArch) -> Tuple[float, float]:
    """(lambda, beta) of the DSLM merge lambda x + beta F(x) with lambda^2 + beta^2 = 1.

    beta^2 = dslm_k / N by default; ``residual_lambda_sq`` / ``residual_beta_sq`` override it (one given:
    the other is 1 minus it). Unnormalised pairs are refused unless ``allow_unnormalized_residual``:
    with lambda^2 + beta^2 != 1 the variance drifts geometrically over depth (theory.md, "DeepScaleLM").
    """
    lambda_sq, beta_sq = arch.residual_lambda_sq, arch.residual_beta_sq
    if lambda_sq is None and beta_sq is None:
        beta_sq = arch.dslm_k / arch.num_layers
        lambda_sq = 1.0 - beta_sq
    elif beta_sq is None:
        beta_sq = 1.0 - lambda_sq
    elif lambda_sq is None:
        lambda_sq = 1.0 - beta_sq
    if lambda_sq < 0.0 or beta_sq < 0.0:
        raise ValueError(
            f"residual scaling needs lambda^2 >= 0 and beta^2 >= 0, got lambda^2={lambda_sq}, beta^2={beta_sq} "
            f"(dslm_k={arch.dslm_k}, num_layers={arch.num_layers})"
        )
    if abs(lambda_sq + beta_sq - 1.0) > RESIDUAL_TOLERANCE and not arch.allow_unnormalized_residual:
        raise ValueError(
            f"residual scaling needs lambda^2 + beta^2 = 1 (got {lambda_sq} + {beta_sq} = {lambda_sq + beta_sq}); "
            "set allow_unnormalized_residual to use it anyway"
        )
    return math.sqrt(lambda_sq), math.sqrt(beta_sq)


def build_layers(
    arch: ModelArch, layer_stds: Callable[[int], dict], lambda_: float = 1.0, beta: float = 1.0
) -> Tuple[LayerInit, ...]:
    """One ``LayerInit`` per layer: ``layer_stds(layer_number)`` gives the six stds, one lambda/beta for both merges."""
    return tuple(
        LayerInit(
            layer_number=n,
            attn_lambda=lambda_,
            attn_beta=beta,
            mlp_lambda=lambda_,
            mlp_beta=beta,
            **layer_stds(n),
        )
        for n in range(1, arch.num_layers + 1)
    )


def xavier_std(fan_in: int, fan_out: int) -> float:
    """Glorot normal: sqrt(2 / (fan_in + fan_out))."""
    return math.sqrt(2.0 / (fan_in + fan_out))


def xavier_layer_stds(arch: ModelArch) -> dict:
    """Xavier per projection (Q, K, V, O are d -> d; fc1 d -> f; fc2 f -> d)."""
    d, f = arch.hidden_size, arch.ffn_size
    square = xavier_std(d, d)
    return dict(
        query_std=square, key_std=square, value_std=square, attn_proj_std=square,
        fc1_std=xavier_std(d, f), fc2_std=xavier_std(f, d),
    )


def make_table(scheme: str, embedding_std: float, head_std: float, layers, **extra) -> InitTable:
    """An ``InitTable`` with one std for all embedding tables and one for the pooler / LM-head / binary heads."""
    return InitTable(
        scheme=scheme,
        word_embedding_std=embedding_std,
        position_embedding_std=embedding_std,
        tokentype_embedding_std=embedding_std,
        layers=tuple(layers),
        pooler_std=head_std,
        lm_head_dense_std=head_std,
        binary_head_std=head_std,
        **extra,
    )
