"""Closed-form moments of the parameter-light layers: linear, LayerNorm, dropout, embeddings, residual merge.

Each forward function maps input ``Moments`` to output ``Moments``; each ``*_backward`` maps the gradient
arriving from above to the gradient w.r.t. the layer input (docs/theory.md, "Components").
"""

from __future__ import annotations

from .moments import GradMoments, Moments, from_cov, grad_from_cov


def linear(x: Moments, fan_in: int, weight_std: float) -> Moments:
    """y = x W, W ~ N(0, weight_std^2): zero mean; var and cov pick up the input's *second* moments.

    Weights are shared across tokens, so two tokens stay correlated through E[x_i x_j] = mean^2 + corr var.
    """
    scale = fan_in * weight_std**2
    return from_cov(0.0, scale * x.second_moment, scale * (x.mean**2 + x.cov))


def linear_backward(grad: GradMoments, fan_out: int, weight_std: float) -> GradMoments:
    """dL/dx = dL/dy W^T: each input feature gathers ``fan_out`` independent weights."""
    return grad.scaled(fan_out * weight_std**2)


def layernorm(x: Moments, hidden_size: int, gamma: float = 1.0, beta: float = 0.0) -> Moments:
    """LayerNorm over ``hidden_size`` features, affine (gamma, beta) applied after normalisation.

    The per-token centring removes the shared mean and 1/d of the cross-token covariance.
    """
    corr = x.corr * (1.0 - 1.0 / hidden_size)
    return Moments(beta, gamma**2, corr)


def layernorm_backward(
    grad: GradMoments,
    x: Moments,
    hidden_size: int,
    gamma: float = 1.0,
    projected_share: float = 1.0,
    fresh_input_share: float = 1.0,
) -> GradMoments:
    """Gradient through LayerNorm: divided by the input variance, minus the two removed directions.

    The Jacobian is P / sigma_hat with P projecting out the all-ones direction and the normalised input,
    each taking 1/d of a gradient independent of them. ``projected_share`` (0..1) is the share of the
    gradient still independent of those directions (1 standalone; smaller in a Post-LN stack whose skip
    gradient the LayerNorm above already projected). The per-token sigma_hat^2 is a (d-1)-dof sample
    variance, so E[1 / sigma_hat^2] = (d-1)/(d-3) / var for a Gaussian input (Jensen); ``fresh_input_share``
    scales that for inputs whose per-token variance is partly pinned (a normalised Post-LN skip stream).
    The two 1/d effects cancel to O(1/d^2) for a standalone LayerNorm.
    """
    d = hidden_size
    keep = (1.0 - 2.0 * projected_share / d) * (1.0 + 2.0 * fresh_input_share / max(d - 3.0, 1.0))
    return GradMoments(grad.var * gamma**2 * keep / x.var, grad.corr)


def dropout(x: Moments, p: float) -> Moments:
    """Inverted dropout: independent masks per element leave the mean and cross-token cov unchanged."""
    if p <= 0.0:
        return x
    return from_cov(x.mean, (x.var + p * x.mean**2) / (1.0 - p), x.cov)


def dropout_backward(grad: GradMoments, p: float) -> GradMoments:
    if p <= 0.0:
        return grad
    return grad_from_cov(grad.var / (1.0 - p), grad.cov)


def embeddings(num_tables: int, embedding_std: float, corr: float, p: float = 0.0) -> Moments:
    """Sum of ``num_tables`` N(0, embedding_std^2) lookups, then dropout.

    ``corr`` is the token correlation of the sum before dropout (r0; see ``megatron.dslm.estimate_corr``).
    """
    summed = Moments(0.0, num_tables * embedding_std**2, corr)
    return dropout(summed, p)


def residual_merge(x: Moments, branch: Moments, lambda_: float, beta: float) -> Moments:
    """x' = lambda x + beta F(x), skip and branch uncorrelated (the branch ends in a zero-mean random layer)."""
    var = lambda_**2 * x.var + beta**2 * branch.var
    cov = lambda_**2 * x.cov + beta**2 * branch.cov
    mean = lambda_ * x.mean + beta * branch.mean
    return from_cov(mean, var, cov)


def residual_merge_backward(
    grad: GradMoments, branch_input_grad: GradMoments, lambda_: float, beta: float
) -> GradMoments:
    """dL/dx = lambda g + beta J_F^T g; ``branch_input_grad`` is J_F^T g for the unscaled g."""
    var = lambda_**2 * grad.var + beta**2 * branch_input_grad.var
    cov = lambda_**2 * grad.cov + beta**2 * branch_input_grad.cov
    return grad_from_cov(var, cov)
