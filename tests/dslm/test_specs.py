"""Scaled-residual and Post-LN layer specs against stock megatron-core and hand computations."""

from __future__ import annotations

from megatron.perf import SpeedOptions

import pytest
import torch

from tests.support import causal_inputs, hand_table, make_config


pytestmark = pytest.mark.usefixtures("single_process_megatron")


def _seed(seed=5):
    from megatron.training.initialize import set_random_seed

    set_random_seed(seed)


def _fwd_bwd(model, inputs, seed=11):
    tokens, pos, mask = inputs
    _seed(seed)
    model.zero_grad(set_to_none=True)
    logits = model(tokens, pos, mask)
    (logits.float() ** 2).mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return logits.detach(), grads


def test_identity_residual_reproduces_stock_gpt_bitwise():
    """λ = β = 1, megatron σ, Pre-LN: same weights -> forward and backward equal to stock GPTModel, dropout on."""
    from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.models.gpt.gpt_model import GPTModel

    from megatron.dslm.mcore.models import build_gpt_model

    config = make_config(num_layers=3, dropout=0.1)
    ours = build_gpt_model(config, hand_table(3), vocab_size=64, max_sequence_length=16, seed=3)
    for layer in ours.decoder.layers:
        assert layer.self_attn_bda is get_bias_dropout_add and layer.mlp_bda is get_bias_dropout_add
    _seed(1)
    stock = GPTModel(config=config, transformer_layer_spec=get_gpt_layer_local_spec(), vocab_size=64,
                     max_sequence_length=16, share_embeddings_and_output_weights=True)
    stock.load_state_dict(ours.state_dict())
    inputs = causal_inputs(2, 8, 64)
    out_a, grad_a = _fwd_bwd(ours, inputs)
    out_b, grad_b = _fwd_bwd(stock, inputs)
    assert torch.equal(out_a, out_b)
    assert grad_a.keys() == grad_b.keys()
    for name in grad_a:
        assert torch.equal(grad_a[name], grad_b[name]), name


def test_identity_residual_reproduces_stock_bert():
    from megatron.core.models.bert.bert_layer_specs import bert_layer_local_spec
    from megatron.core.models.bert.bert_model import BertModel

    from megatron.dslm.mcore.models import build_bert_model

    config = make_config(num_layers=2, dropout=0.0)
    ours = build_bert_model(config, hand_table(2), vocab_size=64, max_sequence_length=16, seed=3)
    stock = BertModel(config=config, num_tokentypes=2, transformer_layer_spec=bert_layer_local_spec, vocab_size=64,
                      max_sequence_length=16, share_embeddings_and_output_weights=True)
    stock.load_state_dict(ours.state_dict())
    tokens = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    pad = torch.ones(2, 8, dtype=torch.long)
    pad[1, 6:] = 0
    types = torch.zeros_like(tokens)
    la, ba = ours(tokens, pad, tokentype_ids=types)
    lb, bb = stock(tokens, pad, tokentype_ids=types)
    assert torch.equal(la, lb) and torch.equal(ba, bb)


def _hand_layer(layer, x, mask, lam, beta, post_ln):
    attn_in = x if post_ln else layer.input_layernorm(x)
    out, bias = layer.self_attention(attn_in, attention_mask=mask)
    h = lam * x + beta * (out + bias)
    if post_ln:
        h = torch.nn.functional.layer_norm(h, (h.shape[-1],), layer.post_attn_layernorm.weight,
                                           layer.post_attn_layernorm.bias, layer.config.layernorm_epsilon)
    mlp_in = h if post_ln else layer.pre_mlp_layernorm(h)
    out, bias = layer.mlp(mlp_in)
    y = lam * h + beta * (out + bias)
    if post_ln:
        y = torch.nn.functional.layer_norm(y, (y.shape[-1],), layer.post_mlp_layernorm.weight,
                                           layer.post_mlp_layernorm.bias, layer.config.layernorm_epsilon)
    return y


@pytest.mark.parametrize("post_ln", [False, True])
def test_scaled_residual_matches_hand_computation(post_ln):
    from megatron.dslm.mcore.models import build_gpt_model

    lam, beta = 0.8, 0.6
    table = hand_table(2, std=0.2, lam=lam, beta=beta)
    model = build_gpt_model(make_config(num_layers=2), table, vocab_size=64, max_sequence_length=16,
                            post_ln=post_ln, seed=4)
    model.eval()
    # Non-zero biases and LayerNorm affines so β-on-bias and the norm placement are exercised.
    with torch.no_grad():
        g = torch.Generator().manual_seed(1)
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    layer = model.decoder.layers[1]
    assert (layer.attn_residual_scale, layer.attn_branch_scale) == (lam, beta)
    x = torch.randn(8, 2, 32, generator=torch.Generator().manual_seed(2))
    _, _, mask = causal_inputs(2, 8, 64)
    with torch.no_grad():
        got = layer(x, attention_mask=mask)[0]
        want = _hand_layer(layer, x, mask, lam, beta, post_ln)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # and the scaling is not a no-op: λ = β = 1 differs
    with torch.no_grad():
        assert not torch.allclose(got, _hand_layer(layer, x, mask, 1.0, 1.0, post_ln), atol=1e-4)


def test_beta_applies_before_dropout():
    """In training, the branch (output + bias) is scaled by β and then dropped out with the stock function."""
    from megatron.dslm.mcore.specs import scaled_bda
    from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add

    out = torch.randn(4, 3, 5)
    bias = torch.randn(5)
    res = torch.randn(4, 3, 5)
    fn = scaled_bda(get_bias_dropout_add, 0.7, 0.3, None)(True, False)
    torch.manual_seed(0)
    got = fn((out, bias), res, 0.5)
    torch.manual_seed(0)
    want = 0.7 * res + torch.nn.functional.dropout(0.3 * out + 0.3 * bias, p=0.5, training=True)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_unfused_merge_equals_python_scalar_arithmetic_bit_for_bit(dtype):
    """λ is held as a 0-dim tensor for speed; value and gradients must be those of ``λ * x`` with a Python float."""
    from megatron.dslm.mcore.specs import unfused_scaled_bda

    lam, beta = 0.998712345678, 0.0507
    fn = unfused_scaled_bda(False, lam, beta, None)
    g = torch.Generator().manual_seed(0)
    out = torch.randn(4, 3, 5, generator=g).to(dtype).requires_grad_()
    res = torch.randn(4, 3, 5, generator=g).to(dtype).requires_grad_()
    got = fn((out, None), res, 0.1)
    want = torch.add(res * lam, out, alpha=beta)
    assert got.dtype == dtype and torch.equal(got, want)
    seed = torch.randn(4, 3, 5, generator=g).to(dtype)
    got_grads = torch.autograd.grad(got, (out, res), seed)
    want_grads = torch.autograd.grad(want, (out, res), seed)
    for a, b in zip(got_grads, want_grads):
        assert torch.equal(a, b)


def test_post_ln_structure():
    from megatron.core.transformer.identity_op import IdentityOp

    from megatron.dslm.mcore.models import build_bert_model, build_gpt_model

    # σ = 0.5 so the LayerNorm eps (1e-5) is negligible against the embedding variance
    gpt = build_gpt_model(make_config(num_layers=2), hand_table(2, std=0.5), vocab_size=64, max_sequence_length=16,
                          post_ln=True)
    bert = build_bert_model(make_config(num_layers=2, apply_residual_connection_post_layernorm=True),
                            hand_table(2), vocab_size=64, max_sequence_length=16)  # selected by the flag
    for model, block in ((gpt, gpt.decoder), (bert, bert.encoder)):
        assert block.final_layernorm is None
        assert model.embedding.embedding_layernorm is not None
        for layer in block.layers:
            assert isinstance(layer.input_layernorm, IdentityOp)
            assert isinstance(layer.pre_mlp_layernorm, IdentityOp)
            assert layer.post_attn_layernorm is not None and layer.post_mlp_layernorm is not None
    # the embedding output is normalised per token
    tokens, pos, mask = causal_inputs(2, 8, 64)
    with torch.no_grad():
        emb = gpt.embedding(input_ids=tokens, position_ids=pos)
    torch.testing.assert_close(emb.mean(-1), torch.zeros(8, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(emb.var(-1, unbiased=False), torch.ones(8, 2), atol=1e-3, rtol=0)
    # Pre-LN keeps the stock layout
    pre = build_gpt_model(make_config(num_layers=2), hand_table(2), vocab_size=64, max_sequence_length=16)
    assert pre.decoder.final_layernorm is not None and not hasattr(pre.embedding, "embedding_layernorm")
    assert not isinstance(pre.decoder.layers[0].input_layernorm, IdentityOp)


def test_post_ln_embedding_norms_before_its_dropout():
    """word + position -> LayerNorm -> dropout (transformers' BertEmbeddings order): in training the output is the
    eval output with dropout's mask and 1/(1-p) scale applied — zeros exactly where dropped."""
    from megatron.dslm.mcore.models import build_gpt_model

    p = 0.5
    gpt = build_gpt_model(make_config(num_layers=1, dropout=p), hand_table(1, std=0.5), vocab_size=64,
                          max_sequence_length=16, post_ln=True)
    tokens, pos, _ = causal_inputs(2, 8, 64)
    with torch.no_grad():
        gpt.eval()
        clean = gpt.embedding(input_ids=tokens, position_ids=pos)
        gpt.train()
        torch.manual_seed(0)
        noisy = gpt.embedding(input_ids=tokens, position_ids=pos)
    kept = noisy != 0
    assert 0.35 < kept.float().mean() < 0.65
    torch.testing.assert_close(noisy[kept], clean[kept] / (1 - p), rtol=1e-5, atol=1e-6)


def test_post_ln_is_built_by_construction_with_unchanged_keys():
    """No hooks on the embedding or the block; the checkpoint keys are the ones saved checkpoints carry."""
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.transformer.transformer_block import TransformerBlockSubmodules

    from megatron.dslm.mcore.models import NormedLanguageModelEmbedding, build_bert_model, build_gpt_model
    from megatron.dslm.mcore.specs import get_dslm_block_spec, get_dslm_gpt_layer_spec

    config = make_config(num_layers=2, apply_residual_connection_post_layernorm=True)
    gpt = build_gpt_model(config, hand_table(2), vocab_size=64, max_sequence_length=16)
    bert = build_bert_model(config, hand_table(2), vocab_size=64, max_sequence_length=16)
    for model, block in ((gpt, "decoder"), (bert, "encoder")):
        assert type(model.embedding) is NormedLanguageModelEmbedding
        assert not model.embedding._forward_hooks and not model.embedding._forward_pre_hooks
        keys = {t.key for t in nested_values(model.sharded_state_dict())}  # the keys checkpoints store
        assert {"embedding.embedding_layernorm.weight", "embedding.embedding_layernorm.bias"} <= keys
        assert not any("final_layernorm" in k for k in keys)
        assert {f"{block}.layers.post_attn_layernorm.weight", f"{block}.layers.post_mlp_layernorm.bias"} <= keys
        assert not any(k.startswith(f"{block}.layers.input_layernorm") for k in keys)
    assert bert.attn_mask_dimensions == "b1ss"  # BertModel's check saw the layer inside the block spec
    spec = get_dslm_block_spec(config, get_dslm_gpt_layer_spec(hand_table(2), post_ln=True))
    assert isinstance(spec, TransformerBlockSubmodules) and spec.layer_norm is None and len(spec.layer_specs) == 2
    with pytest.raises(ValueError, match="norm placement"):
        get_dslm_block_spec(config, get_dslm_gpt_layer_spec(hand_table(2), post_ln=False))
    # Pre-LN: the stock keys, the final LayerNorm kept
    pre = build_bert_model(make_config(num_layers=2), hand_table(2), vocab_size=64, max_sequence_length=16)
    keys = {t.key for t in nested_values(pre.sharded_state_dict())}
    assert "encoder.final_layernorm.weight" in keys and not any("embedding_layernorm" in k for k in keys)


def test_norm_placement_comes_from_the_config_and_the_table_must_agree():
    import dataclasses

    from megatron.dslm.contract import ModelArch
    from megatron.dslm.mcore.models import build_bert_model, build_gpt_model
    from megatron.dslm.schemes.registry import build_init_table

    pre, post = make_config(num_layers=2), make_config(num_layers=2, apply_residual_connection_post_layernorm=True)
    arch = ModelArch(num_layers=2, hidden_size=32, num_attention_heads=4, seq_length=16, vocab_size=64)
    for scheme in ("xavier", "dslm"):
        pre_table = build_init_table(scheme, arch)
        post_table = build_init_table(scheme, dataclasses.replace(arch, post_ln=True))
        assert (pre_table.post_ln, post_table.post_ln) == (False, True)
        with pytest.raises(ValueError, match="built for Post-LN but the model is Pre-LN"):
            build_gpt_model(pre, post_table, vocab_size=64, max_sequence_length=16)
        with pytest.raises(ValueError, match="built for Pre-LN but the model is Post-LN"):
            build_bert_model(post, pre_table, vocab_size=64, max_sequence_length=16)
        assert build_gpt_model(post, post_table, vocab_size=64, max_sequence_length=16).decoder.final_layernorm is None
    # a hand-built table says nothing about placement, except that only Post-LN asks for the embedding LN
    with pytest.raises(ValueError, match="built for Post-LN"):
        build_gpt_model(pre, hand_table(2, embedding_layernorm=True), vocab_size=64, max_sequence_length=16)
    # the legacy keyword may select Post-LN but not contradict the config
    with pytest.raises(ValueError, match="config alone decides"):
        build_gpt_model(post, hand_table(2), vocab_size=64, max_sequence_length=16, post_ln=False)
    legacy = build_gpt_model(pre, hand_table(2), vocab_size=64, max_sequence_length=16, post_ln=True)
    assert legacy.config.apply_residual_connection_post_layernorm and legacy.decoder.final_layernorm is None
    assert not pre.apply_residual_connection_post_layernorm  # the caller's config is left alone


def test_lm_logit_scale_scales_logits():
    from megatron.dslm.mcore.models import build_gpt_model

    inputs = causal_inputs(2, 8, 64)
    outs = []
    for scale in (1.0, 0.25):
        model = build_gpt_model(make_config(num_layers=2), hand_table(2, logit_scale=scale), vocab_size=64,
                                max_sequence_length=16, seed=8)
        model.eval()
        with torch.no_grad():
            outs.append(model(*inputs))
    torch.testing.assert_close(outs[1], 0.25 * outs[0], rtol=1e-5, atol=1e-6)
    assert type(model).__name__ == "DSLMGPTModel" and model.lm_logit_scale == 0.25


def test_relu_activation_and_fast_attention_match():
    from megatron.dslm.mcore.models import build_gpt_model

    inputs = causal_inputs(2, 8, 64)
    config = make_config(num_layers=2, activation_func=torch.nn.functional.relu)
    outs = []
    for fast in (False, True):
        model = build_gpt_model(config, hand_table(2, std=0.1, lam=0.9, beta=0.5), vocab_size=64,
                                max_sequence_length=16, seed=8, speed=SpeedOptions(sdpa_attention=fast))
        model.eval()
        with torch.no_grad():
            outs.append(model(*inputs))
    assert torch.isfinite(outs[0]).all()
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)
