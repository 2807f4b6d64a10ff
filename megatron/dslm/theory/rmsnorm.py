"""RMSNorm y = gamma x / sqrt(mean_k x_k^2 + eps), forward and backward (docs/theory.md, "Today's decoder block").

Unlike LayerNorm it does not centre: a shared input mean survives as the output mean mu / sqrt(mu^2 + var),
and no 1/d of the cross-token covariance is removed. By symmetry of the features sum_k y_k^2 = d gamma^2
exactly, so E[y^2] = gamma^2 whatever the input.

Backward: the Jacobian is (gamma / rho) (I - y y^T / (d gamma^2)), rho^2 the token's mean square. It removes
the normalised-input direction (1/d of a gradient independent of it) and scales by E[1/rho^2]; for
d rho^2 / var a (non-central) chi-square with d dof that is 1/m (1 + (2 var^2 + 4 mu^2 var) / (m^2 (d - 2))),
m = var + mu^2 (exactly d / (d - 2) / var for mu = 0).
"""

from __future__ import annotations

from .moments import GradMoments, Moments, from_cov


def rmsnorm(x: Moments, hidden_size: int, gamma: float = 1.0) -> Moments:
    m = x.second_moment
    mean = gamma * x.mean / m**0.5
    return from_cov(mean, gamma**2 - mean**2, gamma**2 * x.cov / m)


def rmsnorm_backward(grad: GradMoments, x: Moments, hidden_size: int, gamma: float = 1.0) -> GradMoments:
    d, m = hidden_size, x.second_moment
    inverse_ms = (1.0 + (2.0 * x.var**2 + 4.0 * x.mean**2 * x.var) / (m**2 * max(d - 2.0, 1.0))) / m
    return GradMoments(grad.var * gamma**2 * (1.0 - 1.0 / d) * inverse_ms, grad.corr)
