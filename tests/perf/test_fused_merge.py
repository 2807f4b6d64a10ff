"""The fused λ/β merge (TorchScript) against the unfused one and the closed form: values, gradients, dropout masks,
Post-LN through the bda factory, and whole DSLM layers with megatron-core's bias_dropout_fusion on and off."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from megatron.dslm.mcore.specs import scaled_bda, unfused_scaled_bda
from megatron import perf
from megatron.perf.fused_merge import fused_scaled_bda
from tests.support import causal_inputs, hand_table, make_config

LAM, BETA, P = 0.8, 0.6, 0.3
SHAPE = (8, 3, 16)  # [s, b, h]


def _ordered_bf16(t: torch.Tensor) -> torch.Tensor:
    """bf16 bit patterns as integers that increase with the value, so a difference of 1 is one ulp."""
    bits = t.contiguous().view(torch.int16).to(torch.int32)
    return torch.where(bits < 0, -(bits & 0x7FFF), bits)


def _assert_close(got, want, dtype):
    assert got.dtype == want.dtype == dtype
    if dtype == torch.bfloat16:
        assert (_ordered_bf16(got) - _ordered_bf16(want)).abs().max().item() <= 1
    else:
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def _inputs(dtype, with_bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, f, b = (torch.randn(shape, generator=g).to(dtype) for shape in (SHAPE, SHAPE, SHAPE[-1:]))
    return x, f, b if with_bias else None


def _run(fn, x, f, b, prob, seed=123):
    """Value and grads w.r.t. x, F, b of one merge, with the RNG seeded just before (same state -> same mask)."""
    leaves = [t.clone().requires_grad_() for t in (x, f)] + ([b.clone().requires_grad_()] if b is not None else [])
    torch.manual_seed(seed)
    y = fn((leaves[1], leaves[2] if b is not None else None), leaves[0], prob)
    upstream = torch.linspace(-1.0, 1.0, y.numel()).reshape(y.shape).to(y.dtype)
    y.backward(upstream)
    return [y.detach()] + [t.grad for t in leaves]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("prob", [0.0, P])
def test_fused_equals_unfused_values_and_grads(dtype, training, with_bias, prob):
    x, f, b = _inputs(dtype, with_bias)
    fused, unfused = fused_scaled_bda(training, LAM, BETA, None), unfused_scaled_bda(training, LAM, BETA, None)
    for _ in range(3):  # TorchScript's profiling executor optimises the graph after its first calls
        got, want = _run(fused, x, f, b, prob), _run(unfused, x, f, b, prob)
        assert len(got) == len(want) == (4 if with_bias else 3)
        for g, w in zip(got, want):
            _assert_close(g, w, dtype)
            # Nothing is fused on CPU: the same ops in the same order, bit for bit (the row's CPU claim).
            assert torch.equal(g, w)


@pytest.mark.parametrize("training", [True, False])
def test_fused_merge_is_the_closed_form(training):
    """λ·x + β·mask·(F + b)/(1 - p) with a 0/1 mask in training; λ·x + β·(F + b) in eval (fp64)."""
    x, f, b = _inputs(torch.float64, True, seed=3)
    torch.manual_seed(7)
    y = fused_scaled_bda(training, LAM, BETA, None)((f, b), x, P)
    branch = BETA * (f + b)
    if not training:
        torch.testing.assert_close(y, LAM * x + branch, rtol=1e-12, atol=1e-12)
        return
    kept = (y - LAM * x).div(branch / (1 - P))
    dropped = kept.abs() < 1e-9
    assert torch.all(dropped | ((kept - 1).abs() < 1e-9))
    assert 0.1 < dropped.double().mean().item() < 0.5  # the mask is real (p = 0.3), not all-keep
    torch.manual_seed(8)
    assert not torch.equal(y, fused_scaled_bda(True, LAM, BETA, None)((f, b), x, P))  # and comes from the RNG


def test_residual_is_cast_to_the_branch_dtype_as_stock():
    x, f, b = _inputs(torch.bfloat16, True)
    want = unfused_scaled_bda(False, LAM, BETA, None)((f, b), x.float(), 0.0)
    got = fused_scaled_bda(False, LAM, BETA, None)((f, b), x.float(), 0.0)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_post_ln_through_the_factory_fused_and_unfused(training, dtype):
    """``scaled_bda``'s factory with ``fused=True`` (what megatron asks under bias_dropout_fusion) vs False."""

    def refuse(*_a, **_k):
        raise AssertionError("the stock bda must not be called for a scaled merge")

    norms = []
    for fused in (True, False):
        torch.manual_seed(0)
        norm = torch.nn.LayerNorm(SHAPE[-1]).to(dtype)
        with torch.no_grad():
            norm.weight.add_(0.1 * torch.randn(SHAPE[-1]).to(dtype))
            norm.bias.add_(0.1 * torch.randn(SHAPE[-1]).to(dtype))
        factory = scaled_bda(refuse, LAM, BETA, norm)
        fn = factory(training, fused)
        assert fn is factory(training, fused)  # built once per layer and mode
        norms.append((norm, fn))
    x, f, b = _inputs(dtype, True)
    (norm_f, fused_fn), (norm_u, unfused_fn) = norms
    for _ in range(2):
        for norm in (norm_f, norm_u):
            norm.zero_grad(set_to_none=True)
        got, want = _run(fused_fn, x, f, b, P), _run(unfused_fn, x, f, b, P)
        for g, w in zip(got + [norm_f.weight.grad, norm_f.bias.grad], want + [norm_u.weight.grad, norm_u.bias.grad]):
            _assert_close(g, w, dtype)
    assert got[0].std() > 0.5  # normalised: the norm really ran after the merge


def test_the_fused_form_comes_from_the_speed_path_package():
    fn = perf.fused_scaled_bda(True, LAM, BETA, None)
    assert fn.__module__ == "megatron.perf.fused_merge"


@pytest.mark.usefixtures("single_process_megatron")
@pytest.mark.parametrize("post_ln", [False, True])
def test_dslm_gpt_with_bias_dropout_fusion_equals_without(post_ln):
    """Whole model, dropout on: megatron's layers ask the factory for fused=True; same loss and grads, bitwise."""
    from megatron.dslm.mcore.models import build_gpt_model
    from megatron.training.initialize import set_random_seed

    unfused_cfg = make_config(num_layers=2, dropout=0.1)
    fused_cfg = dataclasses.replace(unfused_cfg, bias_dropout_fusion=True)
    table = hand_table(2, std=0.2, lam=LAM, beta=BETA)
    models = [build_gpt_model(cfg, table, vocab_size=64, max_sequence_length=16, post_ln=post_ln, seed=4)
              for cfg in (fused_cfg, unfused_cfg)]
    models[0].load_state_dict(models[1].state_dict())
    tokens, pos, mask = causal_inputs(2, 8, 64)
    results = []
    for model in models:
        outs = []
        for _ in range(2):
            set_random_seed(11)
            model.zero_grad(set_to_none=True)
            logits = model(tokens, pos, mask)
            (logits.float() ** 2).mean().backward()
            outs.append((logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
        results.append(outs)
    for (logits_f, grads_f), (logits_u, grads_u) in zip(*results):
        assert torch.equal(logits_f, logits_u)
        assert grads_f.keys() == grads_u.keys() and len(grads_f) > 10
        for name in grads_f:
            assert torch.equal(grads_f[name], grads_u[name]), name
    layer = models[0].decoder.layers[0]
    assert layer.self_attn_bda(True, True).__module__ == "megatron.perf.fused_merge"
    assert layer.self_attn_bda(True, False).__module__ == "megatron.dslm.mcore.specs"
