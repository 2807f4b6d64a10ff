"""DSLM's residual merge ``λ·x + β·dropout(F + b)`` as one TorchScript function.

Flag: bias-dropout fusion, on by default on CUDA (``--no-bias-dropout-fusion`` turns it off; CPU mode never
fuses). megatron-core's layer then asks its bda factory for ``fused=True`` and the DSLM layers answer with
:func:`scaled_bias_dropout_add`.

Replaces: scaling a merge's inputs (β·out, β·bias and λ·x, three extra elementwise passes) before
megatron-core's stock fused bias-dropout-add, by one scripted graph doing the bias add, dropout, λ multiply and
β add, so the TorchScript fuser can merge the elementwise ops around the dropout.

Exactness: the same ops in the same order as the unfused merge
(:func:`megatron.dslm.mcore.specs.unfused_scaled_bda`), with the same dropout call, so the same RNG state gives
the same mask. Where nothing is fused (CPU) values and gradients are bitwise equal; where the fuser merges ops
(GPU) <= 1e-6 relative in fp32 and at most 1 ulp in bf16/fp16 (fused ops may round once instead of per op).

Applies when megatron-core's ``bias_dropout_fusion`` is on and a layer's λ or β differs from 1 or it is
Post-LN; with λ = β = 1 and Pre-LN the layer keeps megatron-core's own callables.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch


@torch.jit.script
def scaled_bias_dropout_add(out: torch.Tensor, bias: Optional[torch.Tensor], residual: torch.Tensor,
                            prob: float, training: bool, residual_scale: float,
                            branch_scale: float) -> torch.Tensor:
    """``λ·residual + β·dropout(out + bias)``; the residual is cast to the branch's dtype first (as stock)."""
    if residual.dtype != out.dtype:
        residual = residual.to(out.dtype)
    if bias is not None:
        out = out + bias
    out = torch.nn.functional.dropout(out, p=prob, training=training)
    if residual_scale != 1.0:
        residual = residual * residual_scale
    if branch_scale == 1.0:
        return residual + out
    return torch.add(residual, out, alpha=branch_scale)


def fused_scaled_bda(training: bool, residual_scale: float, branch_scale: float,
                     post_norm: Optional[torch.nn.Module]) -> Callable:
    """A bda callable ``fn(x_with_bias, residual, prob)`` over :func:`scaled_bias_dropout_add`, then the norm."""
    training = bool(training)
    residual_scale, branch_scale = float(residual_scale), float(branch_scale)

    def bias_dropout_scaled_add_fused(x_with_bias, residual, prob):
        out, bias = x_with_bias
        merged = scaled_bias_dropout_add(out, bias, residual, float(prob), training, residual_scale,
                                         branch_scale)
        return merged if post_norm is None else post_norm(merged)

    return bias_dropout_scaled_add_fused
