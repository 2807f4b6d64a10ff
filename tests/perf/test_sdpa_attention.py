"""The SDPA attention core equals megatron-core's local attention (fp32, CPU): outputs and every gradient."""

from megatron.perf import SpeedOptions

import pytest
import torch

from tests.support import causal_inputs, hand_table, make_config


pytestmark = pytest.mark.usefixtures("single_process_megatron")


@pytest.mark.parametrize("post_ln", [False, True])
@pytest.mark.parametrize("explicit_mask", [False, True])
def test_sdpa_matches_local_forward_and_gradients(post_ln, explicit_mask):
    from megatron.dslm.mcore.models import build_gpt_model

    tokens, pos, mask = causal_inputs(3, 16, 64, seed=11)
    results = []
    for fast in (False, True):
        model = build_gpt_model(make_config(num_layers=3, hidden=64, heads=4),
                                hand_table(3, std=0.3, lam=0.8, beta=0.6), vocab_size=64, max_sequence_length=16,
                                seed=4, post_ln=post_ln, speed=SpeedOptions(sdpa_attention=fast))
        out = model(tokens, pos, mask if explicit_mask else None, labels=tokens)
        out.float().mean().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        results.append((out.detach(), grads))
    (out_local, g_local), (out_fast, g_fast) = results
    assert set(g_local) == set(g_fast) and len(g_local) > 10
    torch.testing.assert_close(out_fast, out_local, rtol=1e-5, atol=1e-5)
    for name in g_local:
        torch.testing.assert_close(g_fast[name], g_local[name], rtol=1e-5, atol=1e-5, msg=name)
    # the logits are far from uniform at std 0.3: the comparison exercises the softmax, not a constant
    assert out_local.std() > 0.1


def test_bert_sdpa_matches_local_with_padding_mask():
    """BERT (padding mask, bidirectional) with the SDPA core built in through the spec and SDPABertModel."""
    from megatron.dslm.mcore.models import build_bert_model
    from megatron.perf.sdpa_attention import SDPAttention

    g = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 64, (3, 16), generator=g)
    types = torch.zeros_like(tokens)
    pad = torch.ones(3, 16, dtype=torch.long)
    pad[1, 10:] = 0  # one padded sequence
    results = []
    for fast in (False, True):
        model = build_bert_model(make_config(num_layers=2, hidden=64, heads=4), hand_table(2, std=0.3),
                                 vocab_size=64, max_sequence_length=16, seed=4, speed=SpeedOptions(sdpa_attention=fast))
        cores = [m for m in model.modules() if isinstance(m, SDPAttention)]
        assert len(cores) == (2 if fast else 0)
        lm, binary = model(tokens, pad, tokentype_ids=types, lm_labels=tokens)
        # pad positions are excluded, as the MLM loss mask does: their rows are computed differently (see
        # SDPAttention) but must not influence anything else
        ((lm.float() * pad).sum() / pad.sum() + binary.float().mean()).backward()
        results.append((lm.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (lm_local, g_local), (lm_fast, g_fast) = results
    real = pad.bool()
    torch.testing.assert_close(lm_fast[real], lm_local[real], rtol=1e-5, atol=1e-5)
    assert torch.isfinite(lm_fast).all()
    assert set(g_local) == set(g_fast)
    for name in g_local:
        # gradients here reach ~20 (std 0.3 weights, summed binary logits): fp32 rounding scales with them
        scale = max(1.0, g_local[name].abs().max().item())
        torch.testing.assert_close(g_fast[name], g_local[name], rtol=1e-5, atol=1e-5 * scale, msg=name)
