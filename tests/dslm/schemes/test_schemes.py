"""Scheme tables: registry, residual-scaling rules, each scheme's sigma rules, and predicted vs measured
variance for every scheme on a small stack."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from megatron.dslm.schemes.common import residual_scalars
from megatron.dslm.schemes.dslm import dslm_layer_corrs, attention_effective_corr
from megatron.dslm.schemes.registry import SCHEME_NAMES, build_init_table
from megatron.dslm.contract import ModelArch
from megatron.dslm.theory.activations import gelu
from megatron.dslm.theory.moments import Moments

ARCH = ModelArch(num_layers=24, hidden_size=256, num_attention_heads=4, seq_length=64, hidden_dropout=0.1)


def test_registry_builds_every_scheme():
    assert set(SCHEME_NAMES) >= {"megatron", "xavier", "dslm", "dslm_simplified", "deepnet", "dsinit"}
    for name in SCHEME_NAMES:
        table = build_init_table(name, ARCH)
        assert table.scheme == name
        assert [layer.layer_number for layer in table.layers] == list(range(1, ARCH.num_layers + 1))
    assert build_init_table("dslm-simplified", ARCH).scheme == "dslm_simplified"
    with pytest.raises(ValueError, match="--init-scheme 'fixup' is unknown; choose one of megatron, xavier"):
        build_init_table("fixup", ARCH)


def test_residual_scalars_default_and_overrides():
    lam, beta = residual_scalars(ARCH)
    assert beta**2 == pytest.approx(1.0 / 24) and lam**2 + beta**2 == pytest.approx(1.0)
    lam, beta = residual_scalars(dataclasses.replace(ARCH, dslm_k=2.0))
    assert beta**2 == pytest.approx(2.0 / 24)
    lam, beta = residual_scalars(dataclasses.replace(ARCH, residual_lambda_sq=0.995))
    assert (lam**2, beta**2) == pytest.approx((0.995, 0.005))
    lam, beta = residual_scalars(dataclasses.replace(ARCH, residual_beta_sq=0.01))
    assert (lam**2, beta**2) == pytest.approx((0.99, 0.01))


def test_unnormalised_residual_is_rejected_unless_allowed():
    bad = dataclasses.replace(ARCH, residual_lambda_sq=1.0, residual_beta_sq=0.5)
    with pytest.raises(ValueError, match="lambda\\^2 \\+ beta\\^2 = 1"):
        build_init_table("dslm", bad)
    table = build_init_table("dslm", dataclasses.replace(bad, allow_unnormalized_residual=True))
    assert table.layers[0].attn_lambda == pytest.approx(1.0)
    assert table.layers[0].attn_beta == pytest.approx(math.sqrt(0.5))
    with pytest.raises(ValueError):
        build_init_table("dslm", dataclasses.replace(ARCH, dslm_k=48.0))  # beta^2 = 2 > 1


def test_megatron_scheme():
    table = build_init_table("megatron", ARCH)
    layer = table.layers[5]
    assert layer.query_std == layer.fc1_std == table.word_embedding_std == ARCH.init_method_std
    assert layer.attn_proj_std == pytest.approx(0.02 / math.sqrt(48)) == layer.fc2_std
    assert table.is_identity_residual


def test_dslm_value_output_rule_and_embeddings():
    for post_ln in (False, True):
        arch = dataclasses.replace(ARCH, post_ln=post_ln, model_type="bert", num_tokentypes=2)
        table = build_init_table("dslm", arch)
        d, keep = arch.hidden_size, 1 - arch.hidden_dropout
        assert table.word_embedding_std**2 == pytest.approx(keep / 3)
        assert table.embedding_layernorm == post_ln
        assert table.lm_logit_scale == pytest.approx(1 / math.sqrt(table.word_embedding_std**2 * d))
        corrs = dslm_layer_corrs(arch)
        assert corrs[0] == pytest.approx(arch.embedding_corr * keep)
        for layer, corr in zip(table.layers, corrs):
            assert layer.query_std**2 == pytest.approx(1 / d)
            effective = attention_effective_corr(corr, arch)
            # sigma_v^2 sigma_o^2 d^2 r_l / (1 - p) = 1, with r_l the (effective) attention correlation
            assert layer.value_std**2 * layer.attn_proj_std**2 * d**2 * effective / keep == pytest.approx(1.0)
            assert corr <= effective <= corr + 2.0 / arch.seq_length + 0.02
        assert max(corrs) < 1.0 and corrs[-1] > corrs[0]  # correlation builds up with depth


def test_dslm_ffn_gives_unit_branch_variance():
    for activation in ("relu", "gelu"):
        arch = dataclasses.replace(ARCH, activation=activation)
        layer = build_init_table("dslm", arch).layers[0]
        d, f, keep = arch.hidden_size, arch.ffn_size, 1 - arch.hidden_dropout
        pre_var = d * layer.fc1_std**2
        if activation == "relu":
            assert 2 * d**2 * layer.fc1_std**2 * layer.fc2_std**2 == pytest.approx(keep)
            assert layer.fc1_std**2 == pytest.approx(math.sqrt(keep / 2) / d)
        else:
            second = gelu(Moments(0.0, pre_var, 0.0)).second_moment
            assert f * layer.fc2_std**2 * second == pytest.approx(keep)


def test_deepnet_and_dsinit_rules():
    post = dataclasses.replace(ARCH, post_ln=True)
    xavier, deepnet = build_init_table("xavier", post), build_init_table("deepnet", post)
    n = post.num_layers
    for a, b in zip(xavier.layers, deepnet.layers):
        assert b.attn_lambda == pytest.approx((2 * n) ** 0.25) and b.attn_beta == 1.0
        assert b.value_std == pytest.approx(a.value_std * (8 * n) ** -0.25)
        assert b.fc2_std == pytest.approx(a.fc2_std * (8 * n) ** -0.25)
        assert b.query_std == a.query_std
    assert build_init_table("deepnet", ARCH).is_identity_residual  # Pre-LN keeps lambda = 1
    dsinit = build_init_table("dsinit", ARCH)
    for a, b in zip(build_init_table("xavier", ARCH).layers, dsinit.layers):
        assert b.fc1_std == pytest.approx(a.fc1_std / math.sqrt(a.layer_number))


@pytest.mark.parametrize("scheme", SCHEME_NAMES)
def test_every_scheme_predicted_variance_matches_a_measured_stack(scheme):
    """Forward variance of an 8-layer bidirectional Pre-LN stack initialised from the table."""
    import torch

    from tests.dslm.theory.test_predictor import monte_carlo_stack  # the plain PyTorch stack

    from megatron.dslm.theory.predictor import predict_profile

    arch = ModelArch(num_layers=8, hidden_size=128, num_attention_heads=4, seq_length=32, hidden_dropout=0.1,
                     attention_dropout=0.1, model_type="bert", embedding_corr=0.2)
    table = build_init_table(scheme, arch)
    torch.manual_seed(0)
    forward_var, _, _ = monte_carlo_stack(arch, table, num_models=16, seed=1)
    predicted = np.array(predict_profile(arch, table).column("forward_var"))
    assert np.all(np.abs(predicted / forward_var.mean(1) - 1) < 0.1), (predicted, forward_var.mean(1))
