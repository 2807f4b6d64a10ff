"""Task heads: shapes, the multiple-choice fold, keyed init, and BertWithHead's checkpoint keys."""

import pytest
import torch

from tasks.heads import ClassificationHead, MultipleChoiceHead, keyed_generator


def test_classification_head_shape_and_keyed_init():
    a = ClassificationHead(16, 3, dropout=0.0, std=0.05, seed=11)
    b = ClassificationHead(16, 3, dropout=0.0, std=0.05, seed=11)
    c = ClassificationHead(16, 3, dropout=0.0, std=0.05, seed=12)
    torch.manual_seed(0)  # the global RNG plays no part
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert not torch.equal(a.classifier.weight, c.classifier.weight)
    assert torch.count_nonzero(a.classifier.bias) == 0
    # std from the init table, within sampling error of 48 draws
    assert a.classifier.weight.std().item() == pytest.approx(0.05, rel=0.3)
    assert a(torch.randn(5, 16)).shape == (5, 3)


def test_multiple_choice_head_scores_each_option_then_folds():
    head = MultipleChoiceHead(8, 4, dropout=0.0, std=0.02, seed=1)
    pooled = torch.randn(3 * 4, 8)
    scores = head(pooled)
    assert scores.shape == (3, 4)
    # row j of question i is option j: its score is the linear map of pooled[i*4 + j]
    expected = (pooled @ head.scorer.weight.t() + head.scorer.bias).view(3, 4)
    assert torch.allclose(scores, expected)


def test_keyed_generator_depends_on_seed_and_key_only():
    x = torch.randn(4, generator=keyed_generator(5, "k"))
    torch.randn(100)
    assert torch.equal(x, torch.randn(4, generator=keyed_generator(5, "k")))
    assert not torch.equal(x, torch.randn(4, generator=keyed_generator(5, "other")))


def test_finetune_loss_ignores_padding_rows():
    from tasks.finetune import loss_func

    logits = torch.tensor([[3.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 9.0]])
    labels = torch.tensor([0, 0, 0])
    indices = torch.tensor([4, 5, -1])  # the last row pads the final evaluation batch
    collected = []
    loss, stats = loss_func(labels, indices, collected, logits)
    expected = torch.nn.functional.cross_entropy(logits[:2], labels[:2])
    assert loss.item() == pytest.approx(expected.item())
    assert stats["accuracy"].item() == pytest.approx(0.5)
    assert collected[0][1].tolist() == [0, 1, 2]


def test_epoch_batches_differ_per_epoch_and_cover_without_repeats():
    from tasks.finetune import epoch_batches

    e0, e1 = epoch_batches(10, 4, seed=1, epoch=0), epoch_batches(10, 4, seed=1, epoch=1)
    assert e0.shape == (2, 4) and len(set(e0.ravel().tolist())) == 8
    assert not (e0 == e1).all()
    assert (epoch_batches(10, 4, seed=1, epoch=0) == e0).all()
