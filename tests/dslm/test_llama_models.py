"""Llama-shaped megatron-core GPTs (RMSNorm, SwiGLU, RoPE, grouped-query attention, no biases, untied output,
q/k norms): the forward equals a hand-written reference with the same weights, the keyed init gives gate and
linear halves of fc1 and the grouped QKV rows their own stds, and the norm options reach every norm."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from tests.support import causal_inputs, hand_table, make_config

pytestmark = pytest.mark.usefixtures("single_process_megatron")

LAYERS, HIDDEN, HEADS, GROUPS, FFN, VOCAB, SEQ = 3, 32, 4, 2, 48, 64, 12


def llama_config(**kw):
    shape = dict(gated_linear_unit=True, activation_func=F.silu, normalization="RMSNorm", num_query_groups=GROUPS,
                 add_bias_linear=False, qk_layernorm=True, ffn_hidden_size=FFN, bias_activation_fusion=False)
    shape.update(kw)
    config = make_config(num_layers=LAYERS, hidden=HIDDEN, heads=HEADS)
    return dataclasses.replace(config, **shape)


def llama_table(gate_std=0.05, output_layer_std=0.03, lam=1.0, beta=1.0, logit_scale=1.0):
    table = hand_table(LAYERS, std=0.02, per_layer=True, qkv=(0.03, 0.04, 0.05), lam=lam, beta=beta,
                       logit_scale=logit_scale)
    layers = tuple(dataclasses.replace(l, gate_std=gate_std * (1 + l.layer_number / LAYERS)) for l in table.layers)
    return dataclasses.replace(table, layers=layers, output_layer_std=output_layer_std)


def build(config, table, rotary_percent=1.0, rotary_base=10000, seed=3):
    from megatron.dslm.mcore.models import build_gpt_model

    return build_gpt_model(config, table, vocab_size=VOCAB, max_sequence_length=SEQ, seed=seed,
                           share_embeddings_and_output_weights=False, position_embedding_type="rope",
                           rotary_percent=rotary_percent, rotary_base=rotary_base)


def _rms(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _rope(t, rot_dim, base):
    """Rotate the first ``rot_dim`` channels of ``t`` [b, s, heads, hd] by position (halves, not interleaved)."""
    seq = t.shape[1]
    inv_freq = 1.0 / base ** (torch.arange(0, rot_dim, 2, dtype=torch.float32) / rot_dim)
    angles = torch.outer(torch.arange(seq, dtype=torch.float32), inv_freq)
    cos, sin = torch.cat([angles.cos()] * 2, -1)[None, :, None], torch.cat([angles.sin()] * 2, -1)[None, :, None]
    rot, rest = t[..., :rot_dim], t[..., rot_dim:]
    first, second = rot.chunk(2, dim=-1)
    return torch.cat([rot * cos + torch.cat([-second, first], -1) * sin, rest], -1)


def reference_logits(model, tokens, table, rotary_percent=1.0, rotary_base=10000):
    """The Llama forward written out from the model's weights: no megatron-core code runs here."""
    eps = model.config.layernorm_epsilon
    hd = HIDDEN // HEADS
    per_group = HEADS // GROUPS
    x = model.embedding.word_embeddings.weight[tokens]  # [b, s, h]: RoPE has no position table
    b, s, _ = x.shape
    causal = torch.triu(torch.ones(s, s, dtype=torch.bool), diagonal=1)
    for layer in model.decoder.layers:
        scales = table.layer(layer.layer_number)
        att = layer.self_attention
        h = _rms(x, layer.input_layernorm.weight, eps)
        qkv = (h @ att.linear_qkv.weight.T).view(b, s, GROUPS, (per_group + 2) * hd)
        q = qkv[..., :per_group * hd].reshape(b, s, HEADS, hd)
        k = qkv[..., per_group * hd:(per_group + 1) * hd]
        v = qkv[..., (per_group + 1) * hd:]
        q, k = _rms(q, att.q_layernorm.weight, eps), _rms(k, att.k_layernorm.weight, eps)
        rot = int(hd * rotary_percent)
        q, k = _rope(q, rot, rotary_base), _rope(k, rot, rotary_base)
        k, v = k.repeat_interleave(per_group, dim=2), v.repeat_interleave(per_group, dim=2)  # head -> its group
        scores = torch.einsum("bqnd,bknd->bnqk", q, k) / math.sqrt(hd)
        probs = scores.masked_fill(causal, float("-inf")).softmax(-1)
        out = torch.einsum("bnqk,bknd->bqnd", probs, v).reshape(b, s, HEADS * hd) @ att.linear_proj.weight.T
        x = scales.attn_lambda * x + scales.attn_beta * out
        h = _rms(x, layer.pre_mlp_layernorm.weight, eps)
        gate, up = (h @ layer.mlp.linear_fc1.weight.T).chunk(2, dim=-1)
        x = scales.mlp_lambda * x + scales.mlp_beta * ((F.silu(gate) * up) @ layer.mlp.linear_fc2.weight.T)
    x = _rms(x, model.decoder.final_layernorm.weight, eps) * table.lm_logit_scale
    return x @ model.output_layer.weight.T


def _randomise_norms(model, seed=0):
    """Non-unit norm weights, so the reference would notice a norm read from the wrong place."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("rotary_percent,rotary_base", [(1.0, 10000), (0.5, 500000)])
def test_forward_equals_hand_written_llama(rotary_percent, rotary_base):
    table = llama_table(lam=0.8, beta=0.6, logit_scale=1.7)
    model = build(llama_config(), table, rotary_percent=rotary_percent, rotary_base=rotary_base).eval()
    _randomise_norms(model)
    tokens, position_ids, mask = causal_inputs(2, SEQ, VOCAB)
    with torch.no_grad():
        got = model(tokens, position_ids, mask)
        want = reference_logits(model, tokens, table, rotary_percent, rotary_base)
    assert got.shape == want.shape == (2, SEQ, VOCAB)
    tol = 1e-5 * max(1.0, want.abs().max().item())
    assert (got - want).abs().max().item() <= tol
    # The reference is sensitive to what it checks: a wrong rotary base moves the logits far past the tolerance.
    with torch.no_grad():
        other = reference_logits(model, tokens, table, rotary_percent, rotary_base * 3)
    assert (other - want).abs().max().item() > 20 * tol


def test_megatron_modules_are_used():
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding

    model = build(llama_config(), llama_table())
    from megatron.core.transformer.identity_op import IdentityOp

    assert getattr(model.embedding, "position_embeddings", None) is None
    assert isinstance(model.rotary_pos_emb, RotaryEmbedding)
    norms = [m for n, m in model.named_modules() if n.endswith("norm") and not isinstance(m, IdentityOp)]
    assert len(norms) == LAYERS * 4 + 1  # input, pre-MLP, q, k per layer; final
    assert norms and all(type(m) is torch.nn.RMSNorm for m in norms), {type(m) for m in norms}
    assert not model.share_embeddings_and_output_weights
    assert all(p is None for n, p in model.named_parameters() if n.endswith("bias"))
    assert not [n for n, _ in model.named_parameters() if n.endswith("bias")]


def _std(t):
    return t.float().std().item()


def test_keyed_init_gate_up_halves_gqa_rows_and_output_layer():
    table = llama_table(gate_std=0.07, output_layer_std=0.011)
    model = build(llama_config(), table)
    hd, per_group = HIDDEN // HEADS, HEADS // GROUPS
    for layer in model.decoder.layers:
        li = table.layer(layer.layer_number)
        gate, up = layer.mlp.linear_fc1.weight.chunk(2, dim=0)  # TP1: the local [gate | linear] is the global one
        for got, want, what in ((gate, li.gate_std, "gate"), (up, li.fc1_std, "linear")):
            assert abs(_std(got) - want) <= 0.08 * want, (layer.layer_number, what, _std(got), want)
        qkv = layer.self_attention.linear_qkv.weight.view(GROUPS, (per_group + 2) * hd, HIDDEN)
        for rows, want in ((slice(0, per_group * hd), li.query_std), (slice(per_group * hd, (per_group + 1) * hd),
                                                                      li.key_std),
                           (slice((per_group + 1) * hd, None), li.value_std)):
            assert abs(_std(qkv[:, rows]) - want) <= 0.1 * want
    assert abs(_std(model.output_layer.weight) - 0.011) <= 0.05 * 0.011
    assert abs(_std(model.embedding.word_embeddings.weight) - table.word_embedding_std) <= 0.05 * 0.02
    # None means "as the tied model": the word-embedding std; gate None means fc1_std.
    plain = build(llama_config(), dataclasses.replace(llama_table(), output_layer_std=None,
                                                      layers=hand_table(LAYERS, per_layer=True).layers))
    assert abs(_std(plain.output_layer.weight) - 0.02) <= 0.05 * 0.02
    gate, up = plain.decoder.layers[0].mlp.linear_fc1.weight.chunk(2, dim=0)
    assert abs(_std(gate) / _std(up) - 1.0) <= 0.1


def test_apply_layernorm_1p_is_the_plain_norm_reparameterised():
    from megatron.dslm.mcore.specs import ZeroCenteredNorm

    table = llama_table()
    plain = build(llama_config(), table).eval()
    shifted = build(llama_config(layernorm_zero_centered_gamma=True), table).eval()
    norms = {n: m for n, m in shifted.named_modules() if n.endswith("norm") and "cross" not in n}
    assert norms and all(isinstance(m, torch.nn.RMSNorm) and torch.all(m.weight == 0) for m in norms.values())
    assert ZeroCenteredNorm is not None
    tokens, position_ids, mask = causal_inputs(2, SEQ, VOCAB)
    with torch.no_grad():
        same = (plain(tokens, position_ids, mask) - shifted(tokens, position_ids, mask)).abs().max().item()
        for name, p in shifted.named_parameters():
            if "norm" in name:
                p.add_(0.5)
        moved = (plain(tokens, position_ids, mask) - shifted(tokens, position_ids, mask)).abs().max().item()
    assert same == 0.0 and moved > 1e-4


@pytest.mark.parametrize("normalization", ["RMSNorm", "LayerNorm"])
def test_post_ln_uses_the_configured_norm_everywhere(normalization):
    config = llama_config(normalization=normalization, apply_residual_connection_post_layernorm=True)
    table = dataclasses.replace(llama_table(lam=0.9, beta=math.sqrt(1 - 0.81)), post_ln=True,
                                embedding_layernorm=True)
    model = build(config, table)
    want = torch.nn.RMSNorm if normalization == "RMSNorm" else torch.nn.LayerNorm
    layer = model.decoder.layers[0]
    for norm in (layer.post_attn_layernorm, layer.post_mlp_layernorm, model.embedding.embedding_layernorm,
                 layer.self_attention.q_layernorm):
        assert type(norm) is want
    tokens, position_ids, mask = causal_inputs(2, SEQ, VOCAB)
    out = model(tokens, position_ids, mask, labels=tokens)
    out.float().mean().backward()
    assert torch.isfinite(out).all()


def test_moment_observer_on_llama_shape():
    from megatron.dslm.mcore.observers import MomentObserver

    model = build(llama_config(), llama_table(lam=0.8, beta=0.6))
    tokens, position_ids, mask = causal_inputs(2, SEQ, VOCAB)
    obs = MomentObserver([model]).attach()
    model(tokens, position_ids, mask, labels=tokens).float().mean().backward()
    records = obs.collect()
    obs.detach()
    layers = sorted(r["layer"] for r in records)
    assert layers == list(range(0, LAYERS + 1))
    for r in records:
        assert math.isfinite(r["forward_var"]) and r["forward_var"] > 0
