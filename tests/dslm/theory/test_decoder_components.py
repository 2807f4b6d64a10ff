"""Today's decoder components (RMSNorm, SwiGLU/GeGLU, RoPE attention, GQA, output layer) against Monte-Carlo.

Each test runs one component in torch on fixed configurations and compares with the closed form (or exact
quadrature); tolerances are a few sampling standard errors of these sizes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from megatron.dslm import montecarlo
from megatron.dslm.theory import activations, attention, output_layer, quadrature
from megatron.dslm.theory.moments import GradMoments, Moments
from megatron.dslm.theory.rotary import Rotary


def _rel(pair):
    predicted, measured = pair
    return abs(predicted - measured) / abs(measured)


def test_silu_quadrature_matches_sampling():
    rng = np.random.default_rng(0)
    for var, corr in ((0.3, 0.2), (1.0, 0.7), (4.0, 0.95)):
        z1 = rng.standard_normal(2_000_000)
        z2 = corr * z1 + math.sqrt(1 - corr**2) * rng.standard_normal(z1.size)
        a, b = math.sqrt(var) * z1, math.sqrt(var) * z2
        silu = lambda z: z / (1 + np.exp(-z))
        m = activations.silu(Moments(0.0, var, corr))
        assert m.mean == pytest.approx(silu(a).mean(), rel=5e-3)
        assert m.second_moment == pytest.approx((silu(a) ** 2).mean(), rel=5e-3)
        assert m.cov + m.mean**2 == pytest.approx((silu(a) * silu(b)).mean(), rel=1e-2)


def test_quadrature_reproduces_gelu_closed_form():
    import numpy as np

    erf = np.vectorize(math.erf)  # the exact GeLU, independent of the closed forms under test
    gelu = lambda z: 0.5 * z * (1 + erf(np.asarray(z, dtype=float) / math.sqrt(2)))
    for var, corr in ((0.5, 0.3), (2.0, 0.9)):
        m = activations.gelu(Moments(0.0, var, corr))
        assert quadrature.expect_pair(gelu, gelu, var, corr) == pytest.approx(m.cov + m.mean**2, rel=1e-8)


@pytest.mark.parametrize("mean", [0.0, 0.8])
def test_rmsnorm_forward_and_backward(mean):
    cfg = dict(batch=512, length=16, width=128, mean=mean, std=1.3, corr=0.4, gamma=1.5, grad_std=1.0, grad_corr=0.3)
    result = montecarlo.case_rmsnorm(cfg, torch.Generator().manual_seed(1))
    for quantity, pair in result.items():
        assert _rel(pair) < 0.03, (quantity, pair)


@pytest.mark.parametrize("name", ["swiglu", "geglu"])
def test_gated_ffn(name):
    case = montecarlo.COMPONENTS[name][1]
    for seed, corr in ((2, 0.1), (3, 0.6)):
        cfg = dict(batch=300, length=8, d=96, ffn=256, std=1.0, corr=corr, gate_std=1.2 / math.sqrt(96),
                   up_std=1 / math.sqrt(96), down_std=1 / math.sqrt(256), grad_std=1.0, grad_corr=0.4)
        result = case(cfg, torch.Generator().manual_seed(seed))
        assert _rel(result["var"]) < 0.04 and _rel(result["grad_var"]) < 0.04, result
        assert _rel(result["cov"]) < 0.12, result


def test_rope_decorrelates_logits_and_keeps_attention_moments():
    cfg = dict(batch=600, length=64, d=64, head_dim=32, std=1.0, corr=0.7, qk_std=1.4 / 8, value_std=1.0 / 8,
               base=100.0, percent=1.0, causal=True, grad_std=1.0, grad_corr=0.3)
    result = montecarlo.case_rope_sha(cfg, torch.Generator().manual_seed(4))
    assert _rel(result["logit_var"]) < 0.03, result["logit_var"]
    # Rotation by lag 4 keeps only c(4) of the keys' 0.7 correlation.
    assert result["logit_corr_lag4"][0] < 0.5 and abs(result["logit_corr_lag4"][0] - result["logit_corr_lag4"][1]) < 0.05
    for quantity in ("var", "cov"):
        assert _rel(result[quantity]) < 0.05, (quantity, result[quantity])
    assert _rel(result["grad_var"]) < 0.08, result["grad_var"]
    # RoPE's effect on the gradient is real: the unrotated closed form is 50% high here.
    plain = attention.single_head_attention_backward(GradMoments(1.0, 0.3), Moments(0.0, 1.0, 0.7), 64, 32,
                                                     1.4 / 8, 1.4 / 8, 1 / 8, 64, 0.0, True)
    assert _rel((plain.var, result["grad_var"][1])) > 0.3


def test_rotary_lag_cosine():
    rotary = Rotary(8, base=100.0, percent=0.5)  # rotates 4 features: frequencies 1 and 0.1
    expected = 0.5 * (math.cos(3.0) + math.cos(0.3)) / 2 + 0.5
    assert rotary.lag_cos([3])[0] == pytest.approx(expected)
    assert rotary.window_mean_cos([2])[0] == pytest.approx(rotary.lag_cos([1])[0])


def test_gqa_matches_mha_moments():
    cfg = dict(batch=200, length=32, d=64, heads=8, groups=2, std=1.0, corr=0.5, query_std=0.7 / 8,
               key_std=0.7 / 8, value_std=1.0 / 8, out_std=1.0 / 8, causal=True, grad_std=1.0, grad_corr=0.3)
    result = montecarlo.case_gqa(cfg, torch.Generator().manual_seed(5))
    for quantity, pair in result.items():
        assert _rel(pair) < 0.06, (quantity, pair)
    with pytest.raises(ValueError, match="not divisible into 3 query groups"):
        attention.AttentionConfig(64, 8, 8, 0.1, 0.1, 0.1, 0.1, 32, num_query_groups=3)


def test_output_layer_logits_and_cross_entropy_gradient():
    cfg = dict(batch=64, length=32, d=64, vocab=512, std=1.0, corr=0.3, weight_std=1.0 / 8, scale=0.7, collision=0.05)
    result = montecarlo.case_output_layer(cfg, torch.Generator().manual_seed(6))
    for quantity, pair in result.items():
        assert _rel(pair) < 0.08, (quantity, pair)
