"""Gated FFNs (SwiGLU = SiLU gate, GeGLU = GeLU gate): act(x W_g) * (x W_u), then W_d (docs/theory.md,
"Today's decoder block").

Given the input, the gate pre-activation a = x W_g and the linear one u = x W_u are jointly Gaussian over the
weights and independent of each other (separate weight matrices), each with the input's uncentred token
correlation rho. So every moment of the product factorises:

* forward: E[h^2] = E[act(a)^2] s_u, E[h_i h_j] = E[act(a_i) act(a_j)] rho s_u, mean 0 (u has mean 0);
* backward: dL/da = g_h u act'(a), dL/du = g_h act(a); W_g and W_u are independent, so the two paths' input
  gradients add: f sigma_g^2 s_u E[act'(a)^2] + f sigma_u^2 E[act(a)^2] (times g_h's variance).

The activation moments are GeLU's closed forms or SiLU's exact quadrature (``activations``).

Finite width: the correlation a pair of tokens shows the weights is the sample correlation rho^ of their d
features, which scatters around rho with variance (1 - rho^2)^2 / d. The covariances are non-linear in rho
(the product's E[act(a_i) act(a_j)] rho is ~ mean^2 rho + c rho^2), so E over rho^ adds G''(rho) (1 - rho^2)^2
/ (2 d) -- the leading term at small rho, where G is nearly flat. The input is taken per-token normalised (what
the block's RMSNorm/LayerNorm hands over); a Gaussian input whose norm also scatters would add ~2/d to the
variance (docs/theory.md, "Known gaps").
"""

from __future__ import annotations

from dataclasses import dataclass

from .activations import activation, activation_backward
from .layers import linear, linear_backward
from .moments import GradMoments, Moments, from_cov, grad_from_cov

GATE_ACTIVATIONS = {"swiglu": "silu", "geglu": "gelu"}


@dataclass(frozen=True)
class GatedFFN:
    """Widths and stds of one gated FFN (fc1 = [gate; up], each d -> f; fc2 = down, f -> d)."""

    hidden_size: int
    ffn_size: int
    gate_std: float
    up_std: float
    down_std: float
    activation: str = "silu"  # the gate's activation: "silu" (SwiGLU) or "gelu" (GeGLU)


def _averaged_over_sample_corr(fn, corr: float, fan_in: int) -> float:
    """E[fn(rho^)] to second order for the sample correlation rho^ of ``fan_in`` feature pairs."""
    step = 1e-3
    centre = min(max(corr, -1.0 + step), 1.0 - step)
    curvature = (fn(centre + step) - 2.0 * fn(centre) + fn(centre - step)) / step**2
    return fn(corr) + 0.5 * curvature * (1.0 - corr**2) ** 2 / fan_in


def _pair_moment(activation_name: str, var: float, derivative: bool = False):
    """rho -> E[act(a_i) act(a_j)] (or of act') for (a_i, a_j) ~ N(0, var) with correlation rho."""
    if derivative:
        return lambda rho: activation_backward(GradMoments(1.0, 1.0), Moments(0.0, var, rho), activation_name).cov
    def moment(rho):
        act = activation(Moments(0.0, var, rho), activation_name)
        return act.cov + act.mean**2
    return moment


def _pre_activations(x: Moments, cfg: GatedFFN):
    gate = linear(x, cfg.hidden_size, cfg.gate_std)
    up = linear(x, cfg.hidden_size, cfg.up_std)
    return gate, up


def gated_hidden(x: Moments, cfg: GatedFFN) -> Moments:
    """The product act(a) * u before the down projection."""
    gate, up = _pre_activations(x, cfg)
    act = activation(gate, cfg.activation)
    second = act.second_moment * up.var
    pair = _pair_moment(cfg.activation, gate.var)
    cross = up.var * _averaged_over_sample_corr(lambda rho: pair(rho) * rho, up.corr, cfg.hidden_size)
    return from_cov(0.0, second, cross)


def gated_ffn(x: Moments, cfg: GatedFFN) -> Moments:
    return linear(gated_hidden(x, cfg), cfg.ffn_size, cfg.down_std)


def gated_ffn_backward(grad: GradMoments, x: Moments, cfg: GatedFFN) -> GradMoments:
    gate, up = _pre_activations(x, cfg)
    g_h = linear_backward(grad, cfg.hidden_size, cfg.down_std)
    act = activation(gate, cfg.activation)
    # Gate path: g_h * u * act'(a); the factors are independent, so variances and covariances multiply.
    through_act = activation_backward(GradMoments(1.0, 1.0), gate, cfg.activation)  # E[act'^2]
    d_pair = _pair_moment(cfg.activation, gate.var, derivative=True)
    gate_var = g_h.var * up.var * through_act.var
    gate_cov = g_h.cov * up.var * _averaged_over_sample_corr(lambda rho: d_pair(rho) * rho, up.corr, cfg.hidden_size)
    # Linear path: g_h * act(a).
    up_var = g_h.var * act.second_moment
    up_cov = g_h.cov * _averaged_over_sample_corr(_pair_moment(cfg.activation, gate.var), up.corr, cfg.hidden_size)
    f = cfg.ffn_size
    var = f * cfg.gate_std**2 * gate_var + f * cfg.up_std**2 * up_var
    cov = f * cfg.gate_std**2 * gate_cov + f * cfg.up_std**2 * up_cov
    return grad_from_cov(var, cov)


def gated_corr_map(corr: float, activation_name: str, gate_pre_var: float) -> float:
    """Uncentred token correlation of the gated FFN output for input correlation ``corr`` (unit-free in s_u)."""
    act = activation(Moments(0.0, gate_pre_var, corr), activation_name)
    return (act.cov + act.mean**2) * corr / act.second_moment
