"""Predictor vs a from-scratch PyTorch Monte-Carlo of a Llama-shaped Pre-LN stack: RMSNorm, SwiGLU, RoPE,
grouped-query attention, no biases, residual lambda/beta, causal attention, no dropout."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from megatron.dslm.contract import ModelArch
from megatron.dslm.montecarlo import apply_rotary, correlated_normal
from megatron.dslm.schemes.registry import build_init_table
from megatron.dslm.theory.predictor import predict_profile
from megatron.dslm.theory.rotary import Rotary

ARCH = ModelArch(num_layers=8, hidden_size=64, num_attention_heads=4, seq_length=32, num_query_groups=2,
                 gated_linear_unit=True, activation="silu", normalization="RMSNorm", position_embedding_type="rope",
                 add_bias_linear=False, untie_embeddings_and_output_weights=True, hidden_dropout=0.0,
                 attention_dropout=0.0, embedding_corr=0.3)


def _rms(x):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True))


def monte_carlo_llama(arch: ModelArch, table, num_models: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    m, n, d, f = num_models, arch.seq_length, arch.hidden_size, arch.ffn_size
    heads, groups, hd = arch.num_attention_heads, arch.query_groups, arch.head_dim
    rotary = Rotary(hd, arch.rotary_base, arch.rotary_percent)
    mask = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
    x = correlated_normal(gen, (m, n, d), 0.0, table.word_embedding_std, arch.embedding_corr).requires_grad_(True)
    h, outs = x, []

    def w(rows, cols, std):
        return torch.randn(m, rows, cols, generator=gen) * std

    def heads_of(t, count):
        t = t.view(m, n, count, hd).transpose(1, 2)
        return t.repeat_interleave(heads // count, dim=1)

    for layer in table.layers:
        a = _rms(h)
        q = apply_rotary(heads_of(a @ w(d, heads * hd, layer.query_std), heads), rotary)
        k = apply_rotary(heads_of(a @ w(d, groups * hd, layer.key_std), groups), rotary)
        v = heads_of(a @ w(d, groups * hd, layer.value_std), groups)
        scores = (q @ k.transpose(-1, -2) / math.sqrt(hd)).masked_fill(mask, float("-inf"))
        attn = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(m, n, heads * hd) @ w(heads * hd, d, layer.attn_proj_std)
        h = layer.attn_lambda * h + layer.attn_beta * attn
        b = _rms(h)
        gate, up = b @ w(d, f, layer.gate_std), b @ w(d, f, layer.fc1_std)
        mlp = (torch.nn.functional.silu(gate) * up) @ w(f, d, layer.fc2_std)
        h = layer.mlp_lambda * h + layer.mlp_beta * mlp
        h.retain_grad()
        outs.append(h)
    h.backward(torch.randn(h.shape, generator=gen))
    fwd = np.array([float(o.detach().var()) for o in outs])
    grad = np.array([float(o.grad.pow(2).mean()) for o in outs])
    return fwd, grad


# Gradient tolerance: Xavier's small, highly correlated (r ~ 0.75) early stream is where the attention
# backward is least accurate (docs/theory.md, "Known gaps"): layer 1 measured 23% above the prediction.
@pytest.mark.parametrize("scheme,grad_tolerance", [("dslm", 0.12), ("megatron", 0.12), ("xavier", 0.3)])
def test_llama_stack_matches_predictor(scheme, grad_tolerance):
    table = build_init_table(scheme, ARCH)
    profile = predict_profile(ARCH, table)
    fwd, grad = monte_carlo_llama(ARCH, table, num_models=96, seed=0)
    fwd_err = np.abs(np.array(profile.column("forward_var")) - fwd) / fwd
    grad_err = np.abs(np.array(profile.column("grad_var")) - grad) / grad
    assert fwd_err.max() < 0.10, (fwd_err, fwd)
    assert grad_err.max() < grad_tolerance, (grad_err, grad)


def test_llama_dslm_is_flat_in_the_predictor():
    for layers, hidden in ((192, 128), (1000, 64)):
        arch = ModelArch(num_layers=layers, hidden_size=hidden, num_attention_heads=4, seq_length=128,
                         num_query_groups=2, gated_linear_unit=True, activation="silu", normalization="RMSNorm",
                         position_embedding_type="rope", add_bias_linear=False,
                         untie_embeddings_and_output_weights=True, hidden_dropout=0.0, attention_dropout=0.0)
        profile = predict_profile(arch, build_init_table("dslm", arch))
        fwd, grad = np.array(profile.column("forward_var")), np.array(profile.column("grad_var"))
        assert np.all(np.abs(fwd - 1.0) < 0.02), (fwd.min(), fwd.max())
        assert grad.max() / grad.min() < 3.0


def test_predict_cli_reads_the_upstream_decoder_flags():
    from megatron.dslm.predict import arch_from_args, build_parser

    argv = ("--num-layers 4 --hidden-size 64 --num-attention-heads 8 --seq-length 32 --swiglu --normalization RMSNorm "
            "--position-embedding-type rope --group-query-attention --num-query-groups 4 --disable-bias-linear "
            "--untie-embeddings-and-output-weights").split()
    arch = arch_from_args(build_parser().parse_args(argv))
    assert (arch.gated_linear_unit, arch.activation, arch.normalization, arch.position_embedding_type) == (
        True, "silu", "RMSNorm", "rope")
    assert arch.query_groups == 4 and not arch.add_bias_linear and arch.untie_embeddings_and_output_weights
    with pytest.raises(ValueError, match="divisible by --num-query-groups"):
        arch_from_args(build_parser().parse_args(argv[:-4] + ["--num-query-groups", "3"]))
