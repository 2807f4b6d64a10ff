"""MLM head on the masked positions only (megatron/perf/sparse_mlm.py) equals the dense BertModel
computation."""

from megatron.perf import SpeedOptions

import pytest
import torch

from tests.support import hand_table, make_config

pytestmark = pytest.mark.usefixtures("single_process_megatron")


def _batch(b=3, s=16, vocab=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (b, s), generator=g)
    pad = torch.ones(b, s, dtype=torch.long)
    pad[1, 11:] = 0
    loss_mask = (torch.rand(b, s, generator=g) < 0.2).long() * pad
    loss_mask[0, 0] = 1  # at least one position
    return tokens, torch.zeros_like(tokens), pad, loss_mask


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_masked_positions_head_equals_dense(dropout):
    from megatron.dslm.mcore.models import build_bert_model
    from megatron.perf.sparse_mlm import MaskedPositionsBertModel
    from megatron.training.initialize import set_random_seed

    tokens, types, pad, loss_mask = _batch()
    results = []
    for sparse in (False, True):
        model = build_bert_model(make_config(num_layers=2, hidden=32, heads=4, dropout=dropout),
                                 hand_table(2, std=0.2), vocab_size=64, max_sequence_length=16, seed=3,
                                 speed=SpeedOptions(masked_positions_mlm=sparse))
        assert isinstance(model, MaskedPositionsBertModel) == sparse
        set_random_seed(7)
        extra = {"mlm_positions": loss_mask} if sparse else {}
        lm_loss, binary = model(tokens, pad, tokentype_ids=types, lm_labels=tokens, **extra)
        assert lm_loss.shape == tokens.shape
        total = (lm_loss * loss_mask).sum() / loss_mask.sum() + binary.float().mean()
        total.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((lm_loss.detach(), grads))
    (dense, g_dense), (sparse, g_sparse) = results
    where = loss_mask.bool()
    torch.testing.assert_close(sparse[where], dense[where], rtol=1e-5, atol=1e-6)
    assert torch.all(sparse[~where] == 0)  # nothing computed there; the loss mask zeroes them anyway
    assert set(g_sparse) == set(g_dense) and "lm_head.dense.weight" in g_dense
    for name in g_dense:
        torch.testing.assert_close(g_sparse[name], g_dense[name], rtol=1e-5, atol=1e-6, msg=name)


def test_without_positions_it_is_the_stock_model():
    """Logits path (no labels) and a forward without mlm_positions behave exactly like BertModel."""
    from megatron.dslm.mcore.models import build_bert_model

    tokens, types, pad, _ = _batch(seed=1)
    outs = []
    for sparse in (False, True):
        model = build_bert_model(make_config(num_layers=1, hidden=32, heads=4), hand_table(1, std=0.2),
                                 vocab_size=64, max_sequence_length=16, seed=3,
                                 speed=SpeedOptions(masked_positions_mlm=sparse))
        logits, _ = model(tokens, pad, tokentype_ids=types)
        loss, _ = model(tokens, pad, tokentype_ids=types, lm_labels=tokens)
        outs.append((logits.detach(), loss.detach()))
    assert outs[0][0].shape == (3, 16, 64)
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
