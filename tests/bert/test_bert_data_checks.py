"""pretrain_bert.py's dataset checks: splits megatron-core would loop on are rejected up front."""

import numpy as np
import pytest
import torch

from megatron.training.validate import ConfigError


def _write_indexed(prefix, docs):
    """docs: list of documents, each a list of sentences (lists of token ids)."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=np.int32)
    for doc in docs:
        for sentence in doc:
            builder.add_item(torch.tensor(sentence, dtype=torch.int32))
        builder.end_document()
    builder.finalize(prefix + ".idx")


def test_single_sentence_split_is_rejected_with_the_binary_head(tmp_path):
    from pretrain_bert import check_sentence_coverage

    prefix = str(tmp_path / "d")
    # 8 documents with two sentences, then 2 with one: split 8,2,0 leaves the valid split without a usable doc.
    _write_indexed(prefix, [[[5, 6, 7], [8, 9]]] * 8 + [[[5, 6, 7, 8]]] * 2)
    check_sentence_coverage(prefix, "8,2,0", [10, 0, 0], binary_head=True)  # valid needs no samples: fine
    with pytest.raises(ConfigError, match="valid split .* none with >= 2 sentences"):
        check_sentence_coverage(prefix, "8,2,0", [10, 4, 0], binary_head=True)
    check_sentence_coverage(prefix, "8,2,0", [10, 4, 0], binary_head=False)  # one segment suffices


def test_loss_func_masks_and_reports_sop():
    from pretrain_bert import loss_func

    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    loss_mask = torch.tensor([[1, 0, 1], [0, 0, 1]])
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    is_random = torch.tensor([0, 0])
    loss, stats = loss_func(loss_mask, is_random, (per_token, logits))
    lm = (1 + 3 + 6) / 3
    sop = float(torch.nn.functional.cross_entropy(logits, is_random))
    assert stats["lm loss"].item() == pytest.approx(lm)
    assert stats["sop loss"].item() == pytest.approx(sop)
    assert stats["sop accuracy"].item() == pytest.approx(0.5)
    assert loss.item() == pytest.approx(lm + sop)
    loss2, stats2 = loss_func(loss_mask, is_random, (per_token, None))  # --bert-no-binary-head
    assert set(stats2) == {"lm loss"} and loss2.item() == pytest.approx(lm)
