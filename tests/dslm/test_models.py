"""build_gpt_model / build_bert_model: the interface model_provider relies on, stage builds, head init."""

from __future__ import annotations

import inspect
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "scripts"))

from common import causal_inputs, hand_table, make_config  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _dist():
    from megatron.training.initialize import initialize_distributed, set_random_seed

    initialize_distributed(1, 1)
    set_random_seed(1)
    yield


def test_builder_signatures_are_stable():
    from megatron.dslm.models import build_bert_model, build_gpt_model

    gpt = inspect.signature(build_gpt_model).parameters
    assert list(gpt)[:2] == ["config", "table"]
    for name in ("vocab_size", "max_sequence_length", "pre_process", "post_process", "post_ln", "seed",
                 "share_embeddings_and_output_weights", "position_embedding_type", "fast_attention"):
        assert gpt[name].kind is inspect.Parameter.KEYWORD_ONLY, name
    bert = inspect.signature(build_bert_model).parameters
    for name in ("vocab_size", "max_sequence_length", "num_tokentypes", "add_binary_head", "pre_process",
                 "post_process", "post_ln", "seed"):
        assert bert[name].kind is inspect.Parameter.KEYWORD_ONLY, name


def test_middle_stage_and_untied_head():
    """A stage without embedding/head builds and initialises; an untied output layer gets the word-embedding σ."""
    from megatron.dslm.models import build_gpt_model

    table = hand_table(2, std=0.05)
    middle = build_gpt_model(make_config(num_layers=2), table, vocab_size=64, max_sequence_length=16,
                             pre_process=False, post_process=False)
    assert not hasattr(middle, "embedding") or middle.embedding is None or not middle.pre_process
    hidden = torch.randn(8, 2, 32)
    middle.set_input_tensor(hidden)
    _, _, mask = causal_inputs(2, 8, 64)
    out = middle(None, None, mask)
    assert out.shape == (8, 2, 32)

    untied = build_gpt_model(make_config(num_layers=2, hidden=64), table, vocab_size=2048, max_sequence_length=16,
                             share_embeddings_and_output_weights=False, seed=3)
    w = untied.output_layer.weight
    assert abs(w.std().item() / table.word_embedding_std - 1) < 0.03
    assert not torch.equal(w, untied.embedding.word_embeddings.weight)


def test_same_seed_same_weights_across_builders_and_flags():
    """fast_attention changes no weight; Post-LN adds only norms (weights of shared keys are identical)."""
    from megatron.dslm.models import build_gpt_model

    table = hand_table(2, std=0.05)
    a = dict(build_gpt_model(make_config(num_layers=2), table, vocab_size=64, max_sequence_length=16,
                             seed=9).named_parameters())
    b = dict(build_gpt_model(make_config(num_layers=2), table, vocab_size=64, max_sequence_length=16, seed=9,
                             fast_attention=True, post_ln=True).named_parameters())
    shared = [n for n in a if n in b]
    assert len(shared) >= 10
    for name in shared:
        assert torch.equal(a[name], b[name]), name


def test_bert_builds_with_heads_and_loss():
    from megatron.dslm.models import build_bert_model

    model = build_bert_model(make_config(num_layers=2), hand_table(2), vocab_size=64, max_sequence_length=16)
    assert model.output_layer.weight is None  # tied to the word embedding, as in BERT
    tokens = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    loss, binary = model(tokens, torch.ones(2, 8, dtype=torch.long), tokentype_ids=torch.zeros_like(tokens),
                         lm_labels=tokens)
    assert loss.shape == (2, 8) and binary.shape == (2, 2) and torch.isfinite(loss).all()
