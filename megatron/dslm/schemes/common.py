"""Helpers shared by the scheme modules: the scheme record, residual lambda/beta and per-layer table assembly."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, FrozenSet, Tuple

from ..config import flag
from ..contract import InitTable, LayerInit, ModelArch

# Every table records its depth and norm placement (``build_init_table`` tags post_ln).
READS_ALWAYS = frozenset({"num_layers", "apply_residual_connection_post_layernorm"})
READS_RESIDUAL = frozenset({"dslm_k", "residual_lambda_sq", "residual_beta_sq", "allow_unnormalized_residual"})
READS_XAVIER = READS_ALWAYS | {"hidden_size", "ffn_hidden_size", "kv_channels"}  # kv_channels: Q/K/V fan-outs


@dataclass(frozen=True)
class Scheme:
    """An init scheme: ``build(arch)`` and the ``DSLMConfig`` fields it reads (nothing else changes its table)."""

    name: str
    build: Callable[[ModelArch], "InitTable"]
    reads: FrozenSet[str]

    @property
    def flag_name(self) -> str:
        return self.name.replace("_", "-")


RESIDUAL_TOLERANCE = 1e-6


def residual_squares(arch: ModelArch) -> Tuple[float, float]:
    """(lambda^2, beta^2) of the merge lambda x + beta F(x), checked: the one home of the residual rule.

    beta^2 = dslm_k / N by default; ``residual_lambda_sq`` / ``residual_beta_sq`` override it (one given:
    the other is 1 minus it). lambda^2 + beta^2 != 1 is refused unless ``allow_unnormalized_residual``:
    the stream's variance would then drift geometrically over depth (docs/theory.md, "Blocks and residual
    merges"). Messages name the flags, spelled as every CLI and training spell them.
    """
    lambda_sq, beta_sq = arch.residual_lambda_sq, arch.residual_beta_sq
    if not arch.dslm_k > 0.0:
        raise ValueError(f"{flag('dslm_k')} must be positive, got {arch.dslm_k}")
    for name, value in (("residual_lambda_sq", lambda_sq), ("residual_beta_sq", beta_sq)):
        if value is not None and not value >= 0.0:
            raise ValueError(f"{flag(name)} must be >= 0, got {value}")
    if lambda_sq is None and beta_sq is None:
        beta_sq = arch.dslm_k / arch.num_layers
        lambda_sq = 1.0 - beta_sq
        if lambda_sq < 0.0:
            raise ValueError(f"{flag('dslm_k')} {arch.dslm_k} over {flag('num_layers')} {arch.num_layers} gives "
                             f"beta^2 = {beta_sq:.6g} > 1; residual scaling needs lambda^2, beta^2 >= 0")
    elif beta_sq is None or lambda_sq is None:
        given = "residual_lambda_sq" if beta_sq is None else "residual_beta_sq"
        other = 1.0 - (lambda_sq if beta_sq is None else beta_sq)
        if other < 0.0:
            raise ValueError(f"{flag(given)} {getattr(arch, given)} > 1 leaves a negative square for the other "
                             f"scalar; residual scaling needs lambda^2, beta^2 >= 0")
        lambda_sq, beta_sq = (lambda_sq, other) if beta_sq is None else (other, beta_sq)
    elif abs(lambda_sq + beta_sq - 1.0) > RESIDUAL_TOLERANCE and not arch.allow_unnormalized_residual:
        raise ValueError(
            f"{flag('residual_lambda_sq')} {lambda_sq} + {flag('residual_beta_sq')} {beta_sq} = "
            f"{lambda_sq + beta_sq:.6g} != 1: residual scaling needs lambda^2 + beta^2 = 1 "
            f"(pass {flag('allow_unnormalized_residual')} to override)"
        )
    return lambda_sq, beta_sq


def residual_scalars(arch: ModelArch) -> Tuple[float, float]:
    """(lambda, beta) of the DSLM merge lambda x + beta F(x); see ``residual_squares`` for the rule."""
    lambda_sq, beta_sq = residual_squares(arch)
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
    """Xavier per projection: Q d -> heads*head_dim, K and V d -> groups*head_dim (GQA), O back to d; fc1
    d -> f, and for a gated FFN its gate half alike (each half is its own d -> f projection); fc2 f -> d."""
    d, f = arch.hidden_size, arch.ffn_size
    q_width = arch.num_attention_heads * arch.head_dim
    kv_width = arch.query_groups * arch.head_dim
    fc1 = xavier_std(d, f)
    return dict(
        query_std=xavier_std(d, q_width), key_std=xavier_std(d, kv_width), value_std=xavier_std(d, kv_width),
        attn_proj_std=xavier_std(q_width, d), fc1_std=fc1, fc2_std=xavier_std(f, d),
        gate_std=fc1 if arch.gated_linear_unit else None,
    )


def untied_output_std(arch: ModelArch, std: float):
    """``output_layer_std`` for an untied model (None when tied: the output layer is the word embedding)."""
    return std if arch.untie_embeddings_and_output_weights else None


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
