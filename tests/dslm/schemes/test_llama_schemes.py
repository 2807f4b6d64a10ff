"""Every scheme on today's decoder shape: the new weights get stds, classic tables are unchanged, and DSLM's
gated FFN, embeddings and untied logits have unit variance (checked by Monte-Carlo, not by the theory alone)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from megatron.dslm import montecarlo
from megatron.dslm.contract import ModelArch
from megatron.dslm.schemes.registry import SCHEME_NAMES, build_init_table

LLAMA = ModelArch(num_layers=16, hidden_size=128, num_attention_heads=8, seq_length=64, num_query_groups=4,
                  gated_linear_unit=True, activation="silu", normalization="RMSNorm", position_embedding_type="rope",
                  add_bias_linear=False, untie_embeddings_and_output_weights=True, hidden_dropout=0.1,
                  attention_dropout=0.0)
CLASSIC = ModelArch(num_layers=16, hidden_size=128, num_attention_heads=8, seq_length=64)


@pytest.mark.parametrize("name", SCHEME_NAMES)
def test_new_weights_get_stds_and_classic_tables_do_not(name):
    llama, classic = build_init_table(name, LLAMA), build_init_table(name, CLASSIC)
    assert llama.output_layer_std is not None and llama.output_layer_std > 0
    assert all(layer.gate_std is not None and layer.gate_std > 0 for layer in llama.layers)
    assert classic.output_layer_std is None and all(layer.gate_std is None for layer in classic.layers)
    tied = build_init_table(name, dataclasses.replace(LLAMA, untie_embeddings_and_output_weights=False))
    assert tied.output_layer_std is None


def test_xavier_uses_the_gqa_fan_out():
    layer = build_init_table("xavier", LLAMA).layer(1)
    d, kv = LLAMA.hidden_size, LLAMA.query_groups * LLAMA.head_dim
    assert layer.key_std == pytest.approx(math.sqrt(2.0 / (d + kv)))
    assert layer.query_std == pytest.approx(math.sqrt(1.0 / d))
    assert layer.gate_std == layer.fc1_std


def test_dslm_swiglu_branch_has_variance_one_minus_p_measured():
    layer = build_init_table("dslm", LLAMA).layer(1)
    d, f = LLAMA.hidden_size, LLAMA.ffn_size
    cfg = dict(batch=150, length=8, d=d, ffn=f, std=1.0, corr=0.3, gate_std=layer.gate_std, up_std=layer.fc1_std,
               down_std=layer.fc2_std, grad_std=1.0, grad_corr=0.0)
    measured = montecarlo.COMPONENTS["swiglu"][1](cfg, torch.Generator().manual_seed(0))["var"][1]
    assert measured == pytest.approx(1.0 - LLAMA.hidden_dropout, rel=0.04)


def test_dslm_rope_embedding_and_untied_logits_are_unit():
    table = build_init_table("dslm", LLAMA)
    # One table (no position embedding), dropout brings it back to 1.
    assert table.word_embedding_std**2 / (1.0 - LLAMA.hidden_dropout) == pytest.approx(1.0)
    cfg = dict(batch=16, length=32, d=LLAMA.hidden_size, vocab=1024, std=1.0, corr=0.2,
               weight_std=table.output_layer_std, scale=table.lm_logit_scale, collision=0.05)
    logit_var = montecarlo.case_output_layer(cfg, torch.Generator().manual_seed(1))["logit_var"][1]
    assert logit_var == pytest.approx(1.0, rel=0.05)


def test_dslm_residual_rule_unchanged_on_llama():
    for layer in build_init_table("dslm", LLAMA).layers:
        assert layer.attn_beta**2 == pytest.approx(1.0 / LLAMA.num_layers)
        assert layer.attn_lambda**2 + layer.attn_beta**2 == pytest.approx(1.0)
