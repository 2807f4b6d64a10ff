"""theory/layers.py vs fresh Monte-Carlo (megatron.dslm.montecarlo cases) at the reference's 99th percentiles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from megatron.dslm import montecarlo
from megatron.dslm.theory import layers
from megatron.dslm.theory.moments import GradMoments, Moments


def _errors(case, sweep, seed, count):
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    torch.set_num_threads(1)
    for _ in range(count):
        cfg = sweep(rng)
        yield cfg, {k: abs(p - m) / abs(m) for k, (p, m) in case(cfg, gen).items()}


def test_linear_matches_monte_carlo():
    for cfg, err in _errors(montecarlo.case_linear, montecarlo.sweep_linear, seed=11, count=3):
        assert err["var"] < 0.028, (cfg, err)  # reference 99th percentile 2.8%
        assert err["grad_var"] < 0.028, (cfg, err)
        assert err["cov"] < 0.05, (cfg, err)


def test_layernorm_matches_monte_carlo():
    for cfg, err in _errors(montecarlo.case_layernorm, montecarlo.sweep_layernorm, seed=12, count=3):
        assert err["var"] < 0.01, (cfg, err)
        assert err["grad_var"] < 0.032, (cfg, err)  # reference 99th percentile 3.2%


def test_dropout_matches_monte_carlo():
    for cfg, err in _errors(montecarlo.case_dropout, montecarlo.sweep_dropout, seed=13, count=2):
        assert err["var"] < 0.015, (cfg, err)  # reference 99th percentile 1.5%
        assert err["grad_var"] < 0.015, (cfg, err)


def test_embeddings_sum_then_dropout():
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(3)
    tables, std, corr, p = 3, 0.3, 0.25, 0.1
    predicted = layers.embeddings(tables, std, corr, p)
    summed = sum(
        montecarlo.correlated_normal(gen, (512, 16, 256), 0.0, std, corr if k == 0 else 0.0) for k in range(tables)
    )
    # Only the word table carries the token correlation here: r0 of the sum is corr / tables.
    predicted = layers.embeddings(tables, std, corr / tables, p)
    dropped = torch.nn.functional.dropout(summed, p, training=True)
    assert abs(predicted.var / dropped.var().item() - 1) < 0.01
    assert abs(predicted.cov / montecarlo.token_cov(dropped, 0.0) - 1) < 0.05


def test_residual_merge_matches_monte_carlo():
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(4)
    x = montecarlo.correlated_normal(gen, (256, 16, 256), 0.0, 1.3, 0.4)
    branch = montecarlo.correlated_normal(gen, (256, 16, 256), 0.0, 0.7, 0.9)
    lam, beta = math.sqrt(0.9), math.sqrt(0.1)
    merged = lam * x + beta * branch
    predicted = layers.residual_merge(Moments(0, 1.3**2, 0.4), Moments(0, 0.49, 0.9), lam, beta)
    assert abs(predicted.var / merged.var().item() - 1) < 0.01
    assert abs(predicted.cov / montecarlo.token_cov(merged, 0.0) - 1) < 0.03
    g = layers.residual_merge_backward(GradMoments(2.0, 0.1), GradMoments(0.5, 0.3), lam, beta)
    assert g.var == pytest.approx(0.9 * 2.0 + 0.1 * 0.5)
    assert g.cov == pytest.approx(0.9 * 0.2 + 0.1 * 0.15)
