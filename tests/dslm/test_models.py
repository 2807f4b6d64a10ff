"""build_gpt_model / build_bert_model: the interface model_provider relies on, stage builds, head init."""

from __future__ import annotations

from megatron.perf import SpeedOptions
import inspect

import pytest
import torch

from tests.support import causal_inputs, hand_table, make_config


pytestmark = pytest.mark.usefixtures("single_process_megatron")


def test_builder_signatures_are_stable():
    from megatron.dslm.mcore.models import build_bert_model, build_gpt_model

    gpt = inspect.signature(build_gpt_model).parameters
    assert list(gpt)[:2] == ["config", "table"]
    for name in ("vocab_size", "max_sequence_length", "pre_process", "post_process", "post_ln", "seed",
                 "share_embeddings_and_output_weights", "position_embedding_type", "speed"):
        assert gpt[name].kind is inspect.Parameter.KEYWORD_ONLY, name
    bert = inspect.signature(build_bert_model).parameters
    for name in ("vocab_size", "max_sequence_length", "num_tokentypes", "add_binary_head", "pre_process",
                 "post_process", "post_ln", "seed", "speed"):
        assert bert[name].kind is inspect.Parameter.KEYWORD_ONLY, name


def test_middle_stage_and_untied_head():
    """A stage without embedding/head builds and initialises; an untied output layer gets the word-embedding σ."""
    from megatron.dslm.mcore.models import build_gpt_model

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
    from megatron.dslm.mcore.models import build_gpt_model

    table = hand_table(2, std=0.05)
    a = dict(build_gpt_model(make_config(num_layers=2), table, vocab_size=64, max_sequence_length=16,
                             seed=9).named_parameters())
    b = dict(build_gpt_model(make_config(num_layers=2), table, vocab_size=64, max_sequence_length=16, seed=9,
                             speed=SpeedOptions(sdpa_attention=True), post_ln=True).named_parameters())
    shared = [n for n in a if n in b]
    assert len(shared) >= 10
    for name in shared:
        assert torch.equal(a[name], b[name]), name


def test_bert_builds_with_heads_and_loss():
    from megatron.dslm.mcore.models import build_bert_model

    model = build_bert_model(make_config(num_layers=2), hand_table(2), vocab_size=64, max_sequence_length=16)
    assert model.output_layer.weight is None  # tied to the word embedding, as in BERT
    tokens = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    loss, binary = model(tokens, torch.ones(2, 8, dtype=torch.long), tokentype_ids=torch.zeros_like(tokens),
                         lm_labels=tokens)
    assert loss.shape == (2, 8) and binary.shape == (2, 2) and torch.isfinite(loss).all()


# ----------------------------------------------------------------------------------------------------------
# Profiles at init on real text (issue 4 "Must show"): slow, they build 48- and 192-layer models.


def _run_figures(tmp_path, *flags):
    from tests.support import free_port, require_shared_data, run_python

    corpus = require_shared_data("corpus", "wiki-sample.jsonl")
    vocab = require_shared_data("vocab", "bert-base-uncased-vocab.txt")
    out = tmp_path / "figs"
    proc = run_python(["scripts/signal_propagation_figures.py", "--data-path", str(corpus), "--vocab-file",
                       str(vocab), "--out-dir", str(out), *flags], timeout=1500,
                      # this pytest process owns a process group already: the child needs its own port
                      env={"MASTER_PORT": str(free_port()), "RANK": "0", "WORLD_SIZE": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    import json

    summary = json.loads((out / "signal_propagation_summary.json").read_text())
    return out, summary


def _per_layer_ratio(out, name, scheme, summary, key):
    import json

    from megatron.dslm.plot_moments import predicted_columns

    from megatron.dslm.contract import ModelArch

    cfg = summary["config"]
    records = [json.loads(line) for line in (out / f"{name}_moments.jsonl").read_text().splitlines()]
    arch = ModelArch(num_layers=cfg["num_layers"], hidden_size=cfg["hidden_size"],
                     num_attention_heads=cfg["num_attention_heads"], seq_length=cfg["seq_length"],
                     vocab_size=30592, hidden_dropout=cfg["hidden_dropout"],
                     attention_dropout=cfg["attention_dropout"], activation=cfg["activation"], model_type="bert",
                     num_tokentypes=2, embedding_corr=summary["runs"][name]["r0"], post_ln=name.endswith("postln"))
    pred = predicted_columns(arch, scheme, records[-1]["grad_var"])
    return {r["layer"]: r[key] / p for r, p in zip(records, pred[key]) if r["layer"] >= 1}


@pytest.mark.slow
def test_profiles_match_theory_48_layers(tmp_path):
    """48 x 256 BERT on the sample corpus, 4 seeds: measured forward/grad variance vs the predictor."""
    out, summary = _run_figures(tmp_path, "--num-layers", "48", "--hidden-size", "256", "--num-batches", "2",
                                "--seeds", "4")
    for scheme in ("xavier", "dslm"):
        fwd = _per_layer_ratio(out, f"{scheme}_preln", scheme, summary, "forward_var")
        grad = _per_layer_ratio(out, f"{scheme}_preln", scheme, summary, "grad_var")
        assert all(abs(r - 1) <= 0.15 for r in fwd.values()), (scheme, fwd)
        if scheme == "dslm":
            assert all(abs(r - 1) <= 0.15 for r in grad.values()), (scheme, grad)
        else:
            # Known gap (reported in docs): xavier's gradient at layers 1-3, where the input variance is still
            # far below the branch variance, is measured 15-45% above the predictor; from layer 4 on it agrees.
            assert all(abs(r - 1) <= 0.15 for l, r in grad.items() if l >= 4), (scheme, grad)
            assert all(abs(r - 1) <= 0.6 for r in grad.values()), (scheme, grad)
    runs = summary["runs"]
    assert runs["xavier_preln"]["forward_var_last_layer"] >= 50 * runs["xavier_preln"]["forward_var_first_layer"]


@pytest.mark.slow
def test_dslm_flat_at_192_layers(tmp_path):
    """192 x 128 BERT on real text: DSLM Pre-LN forward variance and Post-LN variance before each LN in
    [0.8, 1.25] at every layer; xavier Pre-LN last layer >= 50x the first."""
    out, summary = _run_figures(tmp_path)
    runs = summary["runs"]
    assert 0.8 <= runs["dslm_preln"]["forward_var_min"] and runs["dslm_preln"]["forward_var_max"] <= 1.25
    assert 0.8 <= runs["dslm_postln"]["pre_norm_var_min"] and runs["dslm_postln"]["pre_norm_var_max"] <= 1.25
    assert runs["xavier_preln"]["forward_var_last_layer"] >= 50 * runs["xavier_preln"]["forward_var_first_layer"]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(
        f"{s}_{k}.png" for s in ("xavier", "dslm")
        for k in ("preln_forward_var", "preln_grad_var", "postln_grad_var", "postln_pre_norm_var"))


def test_one_unwrap_for_checkpoints_init_and_observers():
    """Checkpointing, the init and the observer all see the model inside a megatron-core wrapper."""
    import copy

    from megatron.core.transformer.module import Float16Module

    from megatron.dslm.mcore.models import build_gpt_model
    from megatron.dslm.mcore.observers import MomentObserver
    from megatron.dslm.mcore.weight_init import apply_init_table
    from megatron.training import checkpointing

    table = hand_table(1, std=0.05)
    model = build_gpt_model(make_config(num_layers=1), table, vocab_size=64, max_sequence_length=16, seed=2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    bf16 = copy.copy(model.config)
    bf16.bf16 = True
    wrapped = Float16Module(bf16, model)
    assert checkpointing.unwrap_model(wrapped) is model
    assert MomentObserver(wrapped).chunks == [model]
    apply_init_table(wrapped, table, seed=2)  # reaches the parameters through the wrapper
    for name, p in model.named_parameters():
        assert torch.equal(p.float(), before[name].bfloat16().float()), name
