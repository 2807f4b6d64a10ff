"""ReLU, exact-erf GeLU and SiLU moments for zero-mean Gaussian inputs (docs/theory.md, "Components").

SiLU (the gate of SwiGLU) has no closed-form Gaussian moments: exact Gauss-Hermite quadrature instead.

Both forward functions return the centred covariance; ``Moments.second_moment_corr`` gives the
uncentred correlation a following linear layer propagates.
"""

from __future__ import annotations

import math

import numpy as np

from .moments import GradMoments, Moments, from_cov, grad_from_cov
from .quadrature import expect, expect_pair


def _clip_corr(corr: float) -> float:
    return min(1.0, max(-1.0, corr))


def relu(x: Moments) -> Moments:
    """ReLU of N(0, var) tokens with correlation corr (arc-cosine kernel of degree 1)."""
    corr = _clip_corr(x.corr)
    s = x.var
    mean = math.sqrt(s / (2.0 * math.pi))
    var = s * (math.pi - 1.0) / (2.0 * math.pi)
    cov = s / (2.0 * math.pi) * (math.pi * corr + math.sqrt(1.0 - corr**2) - corr * math.acos(corr) - 1.0)
    return from_cov(mean, var, cov)


def relu_backward(grad: GradMoments, x: Moments) -> GradMoments:
    """Half the units pass the gradient; two tokens both pass with probability 1/4 + arcsin(corr)/(2 pi)."""
    corr = _clip_corr(x.corr)
    return grad_from_cov(grad.var / 2.0, grad.cov * (0.25 + math.asin(corr) / (2.0 * math.pi)))


def gelu(x: Moments) -> Moments:
    """Exact GeLU x Phi(x) of N(0, var) tokens with correlation corr."""
    corr = _clip_corr(x.corr)
    s = x.var
    a = s / (1.0 + s)
    mean = s / math.sqrt(2.0 * math.pi * (1.0 + s))
    var = s / (2.0 * math.pi) * (
        math.pi / 2.0 - a + math.asin(a) + 2.0 * s / ((1.0 + s) * math.sqrt(1.0 + 2.0 * s))
    )
    rs = corr * s
    cross = (
        (2.0 / math.pi) * s * (s * (1.0 - corr**2) + (1.0 + corr**2))
        / ((1.0 + s) * math.sqrt((1.0 + s) ** 2 - rs**2))
    )
    second = s / 4.0 * (corr + (2.0 / math.pi) * corr * math.asin(corr * a) + cross)
    return from_cov(mean, var, second - mean**2)


def gelu_backward(grad: GradMoments, x: Moments) -> GradMoments:
    """E[GeLU'(x)^2] and E[GeLU'(x_i) GeLU'(x_j)] for the correlated pair."""
    corr = _clip_corr(x.corr)
    s = x.var
    a = s / (1.0 + s)
    var_factor = 0.25 + math.asin(a) / (2.0 * math.pi) + s * (5.0 * s + 3.0) / (
        2.0 * math.pi * (1.0 + s) * (1.0 + 2.0 * s) ** 1.5
    )
    rs = corr * s
    ra = corr * a
    cov_factor = 0.5 + (1.0 / (2.0 * math.pi)) * (
        -math.acos(ra) + ra * ((1.0 + s) * (2.0 * s + 3.0) - 2.0 * rs**2) / ((1.0 + s) ** 2 - rs**2) ** 1.5
    )
    return grad_from_cov(grad.var * var_factor, grad.cov * cov_factor)


def _silu(z):
    return z / (1.0 + np.exp(-z))


def _silu_grad(z):
    sig = 1.0 / (1.0 + np.exp(-z))
    return sig * (1.0 + z * (1.0 - sig))


def silu(x: Moments) -> Moments:
    """SiLU z sigmoid(z) of N(0, var) tokens with correlation corr (1-D / 2-D quadrature)."""
    mean = expect(_silu, x.var)
    second = expect(lambda z: _silu(z) ** 2, x.var)
    cross = expect_pair(_silu, _silu, x.var, _clip_corr(x.corr))
    return from_cov(mean, second - mean**2, cross - mean**2)


def silu_backward(grad: GradMoments, x: Moments) -> GradMoments:
    """E[SiLU'(x)^2] and E[SiLU'(x_i) SiLU'(x_j)] for the correlated pair (gradient independent of x)."""
    var_factor = expect(lambda z: _silu_grad(z) ** 2, x.var)
    cov_factor = expect_pair(_silu_grad, _silu_grad, x.var, _clip_corr(x.corr))
    return grad_from_cov(grad.var * var_factor, grad.cov * cov_factor)


def activation(x: Moments, name: str) -> Moments:
    """Forward moments of the named activation ("relu" | "gelu" | "silu")."""
    return _FORWARD[name](x)


def activation_backward(grad: GradMoments, x: Moments, name: str) -> GradMoments:
    return _BACKWARD[name](grad, x)


_FORWARD = {"relu": relu, "gelu": gelu, "silu": silu}
_BACKWARD = {"relu": relu_backward, "gelu": gelu_backward, "silu": silu_backward}
