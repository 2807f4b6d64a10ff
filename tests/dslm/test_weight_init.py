"""apply_init_table: every weight group gets its table std; layout-independent, key-seeded, no global RNG."""

from __future__ import annotations

import importlib

import pytest
import torch

from tests.support import hand_table, make_config

HIDDEN, HEADS, LAYERS = 64, 4, 3
SCHEMES = ("megatron", "xavier", "dslm", "dslm-simplified", "deepnet", "dsinit")


pytestmark = pytest.mark.usefixtures("single_process_megatron")


def _rel_tol(n: int) -> float:
    """~5 standard errors of a sample std from n Gaussian draws (SE ≈ 1/√(2n)), at least 3%."""
    return max(0.03, 5.0 / (2.0 * n) ** 0.5)


def _check_std(tensor: torch.Tensor, expected: float, what: str) -> None:
    got = tensor.float().std().item()
    assert abs(got - expected) <= _rel_tol(tensor.numel()) * expected, f"{what}: std {got:.5g} vs {expected:.5g}"


def check_model_against_table(model, table, kind: str) -> int:
    """Assert the std of every weight group equals the table's (per layer, Q/K/V rows separately)."""
    from megatron.dslm.mcore.weight_init import qkv_row_std

    checked = 0
    block = model.decoder if kind == "gpt" else model.encoder
    emb = model.embedding
    _check_std(emb.word_embeddings.weight, table.word_embedding_std, "word embedding")
    _check_std(emb.position_embeddings.weight, table.position_embedding_std, "position embedding")
    checked += 2
    if kind == "bert":
        _check_std(emb.tokentype_embeddings.weight, table.tokentype_embedding_std, "tokentype embedding")
        _check_std(model.pooler.dense.weight, table.pooler_std, "pooler")
        _check_std(model.lm_head.dense.weight, table.lm_head_dense_std, "lm head dense")
        _check_std(model.binary_head.weight, table.binary_head_std, "binary head")
        assert torch.all(model.lm_head.layer_norm.weight == 1) and torch.all(model.lm_head.layer_norm.bias == 0)
        checked += 4
    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    groups = cfg.num_query_groups or cfg.num_attention_heads
    q_rows = cfg.num_attention_heads // groups * head_dim
    for layer in block.layers:
        li = table.layer(layer.layer_number)
        qkv = layer.self_attention.linear_qkv.weight.view(groups, q_rows + 2 * head_dim, -1)
        _check_std(qkv[:, :q_rows], li.query_std, f"layer {layer.layer_number} query")
        _check_std(qkv[:, q_rows:q_rows + head_dim], li.key_std, f"layer {layer.layer_number} key")
        _check_std(qkv[:, q_rows + head_dim:], li.value_std, f"layer {layer.layer_number} value")
        _check_std(layer.self_attention.linear_proj.weight, li.attn_proj_std, f"layer {layer.layer_number} proj")
        _check_std(layer.mlp.linear_fc1.weight, li.fc1_std, f"layer {layer.layer_number} fc1")
        _check_std(layer.mlp.linear_fc2.weight, li.fc2_std, f"layer {layer.layer_number} fc2")
        assert qkv_row_std(li, cfg.num_attention_heads, groups, head_dim).numel() == qkv.shape[0] * qkv.shape[1]
        checked += 6
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert torch.all(p == 0), name
        elif "norm" in name:
            assert torch.all(p == 1), name
    return checked


@pytest.mark.parametrize("kind", ["gpt", "bert"])
def test_hand_table_std_per_group_and_layer(kind):
    from megatron.dslm.mcore.models import build_bert_model, build_gpt_model

    table = hand_table(LAYERS, std=0.05, per_layer=True, qkv=(0.04, 0.08, 0.12))
    config = make_config(num_layers=LAYERS, hidden=HIDDEN, heads=HEADS)
    build = build_gpt_model if kind == "gpt" else build_bert_model
    model = build(config, table, vocab_size=512, max_sequence_length=128, seed=5)
    assert check_model_against_table(model, table, kind) > 0


def test_grouped_query_attention_rows():
    from megatron.dslm.mcore.models import build_gpt_model

    table = hand_table(2, std=0.05, qkv=(0.02, 0.1, 0.3))
    config = make_config(num_layers=2, hidden=HIDDEN, heads=HEADS, num_query_groups=2)
    model = build_gpt_model(config, table, vocab_size=512, max_sequence_length=64, seed=5)
    check_model_against_table(model, table, "gpt")


def _registry():
    try:
        return importlib.import_module("megatron.dslm.schemes.registry")
    except ImportError:
        return None


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("kind", ["gpt", "bert"])
def test_scheme_std_per_group(scheme, kind):
    """Each registered scheme's table is what the model gets (Q/K vs V, per layer where it varies)."""
    registry = _registry()
    if registry is None:
        pytest.skip("megatron.dslm.schemes.registry not available yet")
    from megatron.dslm.mcore.models import build_bert_model, build_gpt_model
    from megatron.dslm.contract import ModelArch

    arch = ModelArch(num_layers=LAYERS, hidden_size=HIDDEN, num_attention_heads=HEADS, seq_length=64,
                     vocab_size=512, model_type=kind, num_tokentypes=2 if kind == "bert" else 0,
                     post_ln=(scheme == "deepnet"))
    table = registry.build_init_table(scheme, arch)
    config = make_config(num_layers=LAYERS, hidden=HIDDEN, heads=HEADS)
    build = build_gpt_model if kind == "gpt" else build_bert_model
    model = build(config, table, vocab_size=512, max_sequence_length=64, seed=5, post_ln=arch.post_ln)
    check_model_against_table(model, table, kind)


def test_key_seeded_and_no_global_rng():
    from megatron.dslm.mcore.models import build_gpt_model
    from megatron.dslm.mcore.weight_init import apply_init_table

    table = hand_table(2)
    config = make_config(num_layers=2)
    a = build_gpt_model(config, table, vocab_size=64, max_sequence_length=16, seed=1)
    b = build_gpt_model(config, table, vocab_size=64, max_sequence_length=16, seed=1)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n
    state = torch.get_rng_state()
    apply_init_table(b, table, seed=2)
    assert torch.equal(state, torch.get_rng_state()), "apply_init_table consumed the global RNG"
    w_a = a.decoder.layers[0].mlp.linear_fc1.weight
    w_b = b.decoder.layers[0].mlp.linear_fc1.weight
    assert not torch.equal(w_a, w_b)
    # layers get independent draws (the key is shared by the stacked layers; the layer index is in the seed)
    assert not torch.equal(a.decoder.layers[0].mlp.linear_fc1.weight, a.decoder.layers[1].mlp.linear_fc1.weight)


def test_gated_mlp_initialised_and_layer_count_checked():
    """A gated fc1 (megatron's ShardedTensorFactory) is initialised like every weight (halves: test_llama_models)."""
    from megatron.dslm.mcore.models import build_gpt_model

    model = build_gpt_model(make_config(num_layers=2, gated_linear_unit=True), hand_table(2), vocab_size=64,
                            max_sequence_length=16)
    _check_std(model.decoder.layers[0].mlp.linear_fc1.weight, 0.02, "gated fc1")
    with pytest.raises(ValueError, match="--num-layers"):
        build_gpt_model(make_config(num_layers=2), hand_table(3), vocab_size=64, max_sequence_length=16)


def _compare_full(ref: dict, other: dict, what: str) -> float:
    assert ref.keys() == other.keys(), f"{what}: keys differ: {set(ref) ^ set(other)}"
    worst = 0.0
    for name in ref:
        assert not torch.isnan(other[name]).any(), f"{what}: {name} has unfilled shards"
        worst = max(worst, (ref[name] - other[name]).abs().max().item())
    return worst


@pytest.mark.dist
@pytest.mark.parametrize("layout", ["tp2", "pp2"])
@pytest.mark.parametrize("kind", ["gpt", "bert"])
def test_full_weights_equal_tp1(layout_dumps, layout, kind):
    worst = _compare_full(layout_dumps["tp1"][f"{kind}_weights"], layout_dumps[layout][f"{kind}_weights"],
                          f"{kind} {layout}")
    assert worst == 0.0, f"{kind} {layout}: max abs weight diff {worst}"


@pytest.mark.slow
@pytest.mark.dist
def test_full_weights_and_moments_tp2_pp2_equal_tp1(layout_dumps, tmp_path):
    """TP2 x PP2 (4 processes): the same full weights, and the same moments, as the single-process run."""
    from tests.support import REPO_ROOT, run_torchrun

    script = str(REPO_ROOT / "tests" / "dslm" / "scripts" / "dump_full_weights.py")
    proc = run_torchrun(4, [script, "--tp", "2", "--pp", "2", "--out", str(tmp_path / "tp2pp2.pt")], timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    got = torch.load(tmp_path / "tp2pp2.pt", weights_only=False)
    for kind in ("gpt", "bert"):
        worst = _compare_full(layout_dumps["tp1"][f"{kind}_weights"], got[f"{kind}_weights"], f"{kind} tp2pp2")
        assert worst == 0.0, f"{kind} tp2pp2: max abs weight diff {worst}"
        for a, b in zip(layout_dumps["tp1"][f"{kind}_moments"], got[f"{kind}_moments"]):
            assert a.keys() == b.keys()
            for key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-9), (kind, a["layer"], key)


def test_task_heads_draw_from_the_weight_generator():
    """One keyed generator for model weights and task heads: (seed, key, layer) decide the draw, nothing else."""
    from megatron.dslm.mcore.weight_init import keyed_generator
    from tasks.heads import init_linear_, keyed_generator as heads_generator

    assert heads_generator is keyed_generator
    linear = torch.nn.Linear(4, 3)
    init_linear_(linear, 0.5, 7, "task_head.classifier")
    want = 0.5 * torch.randn(3, 4, generator=keyed_generator(7, "task_head.classifier.weight"))
    assert torch.equal(linear.weight.detach(), want) and torch.all(linear.bias == 0)
    draws = [torch.randn(5, generator=keyed_generator(7, "k", layer)) for layer in (None, 0, 1)]
    assert torch.equal(draws[1], torch.randn(5, generator=keyed_generator(7, "k", 0)))
    assert not torch.equal(draws[0], draws[1]) and not torch.equal(draws[1], draws[2])
