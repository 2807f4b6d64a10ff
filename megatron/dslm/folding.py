"""Fold DSLM's residual scaling x' = λ·x + β·F(x) into the branch weights of a stock (λ = β = 1) transformer.

Why it is exact (up to LayerNorm's ε, which sees a rescaled input):

* Pre-LN. With Λ_j = λ_0·…·λ_{j-1} (running product over the sub-layers before j, Λ_0 = 1) and z_j = x_j / Λ_j,
  ``x_{j+1} = λ_j·x_j + β_j·F_j(LN(x_j))`` becomes ``z_{j+1} = z_j + (β_j / Λ_{j+1})·F_j(LN(z_j))`` because
  LN(Λ·z) = LN(z) for Λ > 0. The final LayerNorm is scale invariant too, so the model is a stock Pre-LN model
  whose sub-layer j has its output projection (weight and bias) multiplied by β_j / Λ_{j+1}.
* Post-LN. ``LN(λ·x + β·F(x)) = LN(x + (β/λ)·F(x))`` for λ > 0: multiply the output projection by β/λ.
* The LM logit scale s multiplies the output layer's input, the output of a LayerNorm (final LN for GPT, the
  MLM head's LN for BERT): s·(γ·n + b) = (s·γ)·n + s·b, so it goes into that LayerNorm's weight and bias.

ε: LN(c·z) uses var(c·z) + ε instead of c²·(var(z) + ε/c²); the relative change of the output is about
ε·|1 − c²| / (2·var), below 1e-5 for ε = 1e-5 and unit-scale activations.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple


def pre_ln_branch_multipliers(scales: Sequence[Tuple[float, float]]) -> List[float]:
    """β_j / Λ_{j+1} for each sub-layer j, given its (λ_j, β_j) in forward order (attention, MLP, attention, …)."""
    out, running = [], 1.0
    for j, (lam, beta) in enumerate(scales):
        if not lam > 0.0:
            raise ValueError(f"sub-layer {j}: residual scale λ = {lam} is not positive, the scale cannot be "
                             f"folded through the LayerNorms")
        running *= lam
        out.append(beta / running)
    return out


def post_ln_branch_multipliers(scales: Sequence[Tuple[float, float]]) -> List[float]:
    """β_j / λ_j for each sub-layer j (Post-LN: every merge is normalised right away)."""
    out = []
    for j, (lam, beta) in enumerate(scales):
        if not lam > 0.0:
            raise ValueError(f"sub-layer {j}: residual scale λ = {lam} is not positive, LN(λx + βF(x)) is not "
                             f"LN(x + c·F(x)) for any c")
        out.append(beta / lam)
    return out


def sublayer_scales(layers) -> List[Tuple[float, float]]:
    """(λ, β) of every sub-layer in forward order from an InitTable's ``layers``."""
    out = []
    for layer in layers:
        out.append((float(layer.attn_lambda), float(layer.attn_beta)))
        out.append((float(layer.mlp_lambda), float(layer.mlp_beta)))
    return out
