"""theory/attention.py vs fresh Monte-Carlo: softmax (full form <= 4%), single-head attention forward
(<= 7.8%) and backward including the query/key path (<= 10%), and the MHA block."""

from __future__ import annotations

import math

import numpy as np
import torch

from megatron.dslm import montecarlo
from megatron.dslm.theory import attention
from megatron.dslm.theory.moments import GradMoments, Moments


def test_softmax_full_form_matches_monte_carlo():
    torch.set_num_threads(1)
    rng = np.random.default_rng(31)
    gen = torch.Generator().manual_seed(31)
    for _ in range(4):
        cfg = montecarlo.sweep_softmax(rng)
        err = {k: abs(p - m) / abs(m) for k, (p, m) in montecarlo.case_softmax(cfg, gen).items()}
        assert err["var"] < 0.04, (cfg, err)
        assert err["grad_var"] < 0.04, (cfg, err)


def test_softmax_full_form_respects_the_one_hot_bound():
    """E[sum P^2] <= 1 even when exp(var) >> L, where the approximate form explodes."""
    probs = attention.softmax(Moments(0.0, 16.0, 0.0), 8)
    assert probs.second_moment * 8 <= 1.0 + 1e-9
    assert attention.softmax(Moments(0.0, 16.0, 0.0), 8, full=False).var * 8 > 1e3


def test_single_head_attention_matches_monte_carlo():
    torch.set_num_threads(1)
    rng = np.random.default_rng(32)
    gen = torch.Generator().manual_seed(32)
    for _ in range(6):
        cfg = montecarlo.sweep_sha(rng)
        err = {k: abs(p - m) / abs(m) for k, (p, m) in montecarlo.case_sha(cfg, gen).items()}
        assert err["var"] < 0.078, (cfg, err)
        assert err["grad_var"] < 0.10, (cfg, err)


def test_query_key_path_is_needed_for_the_backward():
    """With uncorrelated tokens the softmax path carries about as much gradient as the value path."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(33)
    cfg = dict(batch=400, length=32, d=64, head_dim=64, std=1.0, corr=0.0, qk_std=1 / 8, value_std=1 / 8,
               p=0.0, causal=False, grad_std=1.0, grad_corr=0.0)
    result = montecarlo.case_sha(cfg, gen)
    predicted, measured = result["grad_var"]
    value_only, _ = result["grad_var_value_path_only"]
    assert abs(predicted / measured - 1) < 0.1
    assert value_only / measured < 0.6


def _mha_monte_carlo(gen, models, length, d, heads, stds, corr, p, grad_corr):
    head_dim = d // heads
    x = montecarlo.correlated_normal(gen, (models, length, d), 0.0, 1.0, corr).requires_grad_(True)
    w = {k: torch.randn(models, d, d, generator=gen) * s for k, s in stds.items()}

    def split(t):
        return t.view(models, length, heads, head_dim).transpose(1, 2)

    q, k, v = split(x @ w["q"]), split(x @ w["k"]), split(x @ w["v"])
    probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(head_dim), -1)
    probs = probs * (torch.rand(probs.shape, generator=gen) >= p).float() / (1 - p)
    out = (probs @ v).transpose(1, 2).reshape(models, length, d) @ w["o"]
    out.backward(montecarlo.correlated_normal(gen, out.shape, 0.0, 1.0, grad_corr))
    return out.detach().var().item(), x.grad.pow(2).mean().item()


def test_multi_head_attention_block_matches_monte_carlo():
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(34)
    d, heads, length, corr, p = 128, 4, 32, 0.3, 0.1
    stds = {"q": 0.8 / math.sqrt(d), "k": 0.8 / math.sqrt(d), "v": 1.2 / math.sqrt(d), "o": 0.9 / math.sqrt(d)}
    var, grad_var = _mha_monte_carlo(gen, 400, length, d, heads, stds, corr, p, grad_corr=0.2)
    x = Moments(0.0, 1.0, corr)
    cfg = attention.AttentionConfig(d, heads, d // heads, stds["q"], stds["k"], stds["v"], stds["o"], length, p, False)
    assert abs(attention.multi_head_attention(x, cfg).var / var - 1) < 0.078
    assert abs(attention.multi_head_attention_backward(GradMoments(1.0, 0.2), x, cfg).var / grad_var - 1) < 0.10


def test_causal_mixing_stats_closed_forms():
    """The O(L) causal statistics equal brute force over the uniform causal attention matrix."""
    length = 40
    a = np.tril(np.ones((length, length)))
    a /= a.sum(1, keepdims=True)
    stats = attention.mixing_stats(length, True, 0.0)
    col = a.sum(0)
    off = ~np.eye(length, dtype=bool)
    assert np.isclose(stats.sum_sq, np.mean((a**2).sum(1)))
    assert np.isclose(stats.cross, (a @ a.T)[off].mean())
    assert np.isclose(stats.col_cross, np.mean(col**2 - (a**2).sum(0)))
    assert np.isclose(stats.col_pair_diag, (a.T @ a)[off].mean())
    assert np.isclose(stats.col_pair_cross, (np.outer(col, col) - a.T @ a)[off].mean())
