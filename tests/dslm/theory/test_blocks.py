"""theory/blocks.py: FFN block (ReLU and GeLU) and one Pre-/Post-LN layer vs fresh Monte-Carlo."""

from __future__ import annotations

import math

import pytest
import torch

from megatron.dslm import montecarlo
from megatron.dslm.schemes.registry import build_init_table
from megatron.dslm.contract import ModelArch
from megatron.dslm.theory import blocks
from megatron.dslm.theory.moments import GradMoments, Moments


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_ffn_block_matches_monte_carlo(activation):
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(41)
    models, length, d, f, corr, grad_corr = 256, 16, 64, 256, 0.4, 0.3
    fc1_std, fc2_std = 1.3 / math.sqrt(d), 0.8 / math.sqrt(f)
    act = torch.relu if activation == "relu" else torch.nn.functional.gelu
    x = montecarlo.correlated_normal(gen, (models, length, d), 0.0, 1.2, corr).requires_grad_(True)
    w1 = torch.randn(models, d, f, generator=gen) * fc1_std
    w2 = torch.randn(models, f, d, generator=gen) * fc2_std
    out = act(x @ w1) @ w2
    out.backward(montecarlo.correlated_normal(gen, out.shape, 0.0, 1.0, grad_corr))
    xm = Moments(0.0, 1.44, corr)
    fwd = blocks.ffn(xm, d, f, fc1_std, fc2_std, activation)
    bwd = blocks.ffn_backward(GradMoments(1.0, grad_corr), xm, d, f, fc1_std, fc2_std, activation)
    assert abs(fwd.var / out.detach().pow(2).mean().item() - 1) < 0.03
    assert abs(fwd.cov / montecarlo.token_cov(out.detach(), 0.0) - 1) < 0.05
    assert abs(bwd.var / x.grad.pow(2).mean().item() - 1) < 0.03
    # the DSLM recurrence's correlation map is the output's uncentred correlation
    pre_var = d * fc1_std**2 * 1.44
    assert blocks.ffn_corr_map(corr, activation, pre_var) == pytest.approx(fwd.corr, rel=1e-9)


@pytest.mark.parametrize("post_ln", [False, True], ids=["pre_ln", "post_ln"])
def test_one_layer_matches_monte_carlo(post_ln):
    """A single xavier layer, bidirectional, with a correlated input and gradient."""
    from tests.dslm.theory.test_predictor import _attention, _layernorm, _mlp

    torch.set_num_threads(1)
    torch.manual_seed(5)
    gen = torch.Generator().manual_seed(42)
    arch = ModelArch(num_layers=1, hidden_size=128, num_attention_heads=4, seq_length=32, post_ln=post_ln,
                     model_type="bert", hidden_dropout=0.1, attention_dropout=0.1)
    layer = build_init_table("xavier", arch).layers[0]
    m, d, f = 96, 128, 512
    x = montecarlo.correlated_normal(gen, (m, 32, d), 0.0, 1.5, 0.5).requires_grad_(True)
    w = {k: torch.randn(m, *shape, generator=gen) * std for k, shape, std in [
        ("q", (d, d), layer.query_std), ("k", (d, d), layer.key_std), ("v", (d, d), layer.value_std),
        ("o", (d, d), layer.attn_proj_std), ("fc1", (d, f), layer.fc1_std), ("fc2", (f, d), layer.fc2_std)]}
    mask = torch.zeros(32, 32, dtype=torch.bool)
    if post_ln:
        y = _layernorm(x + _attention(x, w, arch, mask))
        out = _layernorm(y + _mlp(y, w, arch))
    else:
        y = x + _attention(_layernorm(x), w, arch, mask)
        out = y + _mlp(_layernorm(y), w, arch)
    out.backward(montecarlo.correlated_normal(gen, out.shape, 0.0, 1.0, 0.3))
    xm = Moments(0.0, 2.25, 0.5)
    forward, backward = (blocks.post_ln_layer, blocks.post_ln_layer_backward) if post_ln else (blocks.pre_ln_layer, blocks.pre_ln_layer_backward)
    trace = forward(xm, layer, arch)
    grad = backward(GradMoments(1.0, 0.3), trace, layer, arch)
    grad = grad[0] if isinstance(grad, tuple) else grad
    assert abs(trace.out.var / out.detach().pow(2).mean().item() - 1) < 0.05
    assert abs(grad.var / x.grad.pow(2).mean().item() - 1) < 0.08
