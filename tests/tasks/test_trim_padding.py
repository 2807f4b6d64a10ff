"""Finetuning micro-batches cut to their longest sequence: shapes, and the BERT outputs are unchanged."""

from megatron.perf import SpeedOptions

import numpy as np
import pytest
import torch

from tests.support import hand_table, make_config


def _item(n_real: int, seq: int, label: int, vocab: int = 64, seed: int = 0, choices: int = 0):
    rng = np.random.default_rng(seed)
    shape = (choices, seq) if choices else (seq,)
    text = np.zeros(shape, np.int64)
    mask = np.zeros(shape, np.int64)
    text[..., :n_real] = rng.integers(1, vocab, size=shape[:-1] + (n_real,))
    mask[..., :n_real] = 1
    types = np.zeros(shape, np.int64)
    types[..., n_real // 2:n_real] = 1
    return {"text": text, "types": types, "padding_mask": mask, "label": label, "uid": str(seed)}


def test_collate_trims_to_the_longest_row():
    from tasks.finetune import collate

    items = [_item(5, 16, 0, seed=1), _item(9, 16, 1, seed=2), _item(3, 16, 2, seed=3)]
    full, trimmed = collate(items, [0, 1, 2]), collate(items, [0, 1, 2], trim=True)
    assert full["text"].shape == (3, 16) and trimmed["text"].shape == (3, 9)
    for key in ("text", "types", "padding_mask"):
        assert torch.equal(trimmed[key], full[key][:, :9])
        assert not full[key][:, 9:].any()
    assert torch.equal(trimmed["label"], full["label"])
    # multiple choice [b, k, s]: trimmed over every option of every question
    mc = collate([_item(4, 16, 0, seed=4, choices=4), _item(7, 16, 1, seed=5, choices=4)], [0, 1], trim=True)
    assert mc["text"].shape == (2, 4, 7)


@pytest.mark.usefixtures("single_process_megatron")
def test_trimmed_batch_gives_the_same_bert_outputs():
    from megatron.dslm.mcore.models import build_bert_model
    from tasks.finetune import collate

    items = [_item(6, 16, 0, seed=6), _item(11, 16, 1, seed=7)]
    model = build_bert_model(make_config(num_layers=2, hidden=32, heads=4), hand_table(2, std=0.2), vocab_size=64,
                             max_sequence_length=16, seed=2, speed=SpeedOptions(sdpa_attention=True, torch_linear=True))
    model.eval()
    outs = []
    for trim in (False, True):
        b = collate(items, [0, 1], trim=trim)
        logits, binary = model(b["text"], b["padding_mask"], tokentype_ids=b["types"])
        outs.append((logits.detach(), binary.detach(), b["padding_mask"].bool()))
    (lf, bf, mf), (lt, bt, mt) = outs
    torch.testing.assert_close(bt, bf, rtol=1e-5, atol=1e-6)  # pooled [CLS] -> binary head
    real = mf[:, : lt.shape[1]]
    torch.testing.assert_close(lt[real], lf[:, : lt.shape[1]][real], rtol=1e-5, atol=1e-5)
