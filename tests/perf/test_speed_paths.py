"""The speed-path table and options: stock options give stock megatron-core models, each flag changes only its
own modules, every path has a row and a documented module, and the CPU shim is applied only in CPU mode."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re

import pytest
import torch

from megatron import perf
from megatron.perf import SPEED_PATHS, STOCK, SpeedOptions
from tests.support import make_config

LAYERS, HIDDEN, HEADS, SEQ, VOCAB = 2, 32, 4, 16, 64
LAYER_LINEARS = ("linear_qkv", "linear_proj", "linear_fc1", "linear_fc2")


def _megatron_table(model_type: str):
    from megatron.dslm.contract import ModelArch
    from megatron.dslm.schemes.registry import build_init_table

    arch = ModelArch(num_layers=LAYERS, hidden_size=HIDDEN, num_attention_heads=HEADS, seq_length=SEQ,
                     vocab_size=VOCAB, model_type=model_type, num_tokentypes=2 if model_type == "bert" else 0,
                     hidden_dropout=0.0, attention_dropout=0.0)
    return build_init_table("megatron", arch)


def _gpt(options: SpeedOptions = STOCK):
    from megatron.dslm.mcore.models import build_gpt_model

    return build_gpt_model(make_config(num_layers=LAYERS, hidden=HIDDEN, heads=HEADS), _megatron_table("gpt"),
                           vocab_size=VOCAB, max_sequence_length=SEQ, seed=5, speed=options)


def _bert(options: SpeedOptions = STOCK):
    from megatron.dslm.mcore.models import build_bert_model

    return build_bert_model(make_config(num_layers=LAYERS, hidden=HIDDEN, heads=HEADS), _megatron_table("bert"),
                            vocab_size=VOCAB, max_sequence_length=SEQ, seed=5, speed=options)


def _perf_modules(model):
    return {name: type(m) for name, m in model.named_modules() if type(m).__module__.startswith(perf.__name__)}


def _gpt_inputs():
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (3, SEQ), generator=g)
    pos = torch.arange(SEQ).expand(3, SEQ).contiguous()
    mask = torch.triu(torch.ones(SEQ, SEQ, dtype=torch.bool), diagonal=1)[None, None]
    return tokens, pos, mask


def _bert_inputs():
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, VOCAB, (3, SEQ), generator=g)
    pad = torch.ones(3, SEQ, dtype=torch.long)
    pad[2, 9:] = 0
    return tokens, pad, torch.zeros_like(tokens)


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# ----------------------------------------------------------------------------------------------------------
# (a) stock options: stock megatron-core, bit for bit


@pytest.mark.usefixtures("single_process_megatron")
def test_stock_gpt_is_megatron_core_gpt_bit_for_bit():
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.models.gpt.gpt_model import GPTModel

    ours = _gpt()
    assert _perf_modules(ours) == {}
    stock = GPTModel(config=make_config(num_layers=LAYERS, hidden=HIDDEN, heads=HEADS),
                     transformer_layer_spec=get_gpt_layer_local_spec(), vocab_size=VOCAB, max_sequence_length=SEQ,
                     share_embeddings_and_output_weights=True, position_embedding_type="learned_absolute")
    assert _perf_modules(stock) == {}
    assert set(stock.state_dict()) == set(ours.state_dict())
    stock.load_state_dict(ours.state_dict(), strict=True)
    tokens, pos, mask = _gpt_inputs()
    outs = []
    for model in (ours, stock):
        loss = model(tokens, pos, mask, labels=tokens)
        loss.float().mean().backward()
        outs.append((loss.detach(), model(tokens, pos, mask).detach(), _grads(model)))
    (loss_o, logits_o, g_o), (loss_s, logits_s, g_s) = outs
    assert logits_s.shape == (3, SEQ, VOCAB) and logits_s.std() > 0
    assert torch.equal(loss_o, loss_s) and torch.equal(logits_o, logits_s)
    assert set(g_o) == set(g_s) and len(g_s) > 10
    for name in g_s:
        assert torch.equal(g_o[name], g_s[name]), name


@pytest.mark.usefixtures("single_process_megatron")
def test_stock_bert_is_megatron_core_bert_bit_for_bit():
    from megatron.core.models.bert.bert_layer_specs import bert_layer_local_spec
    from megatron.core.models.bert.bert_model import BertModel

    ours = _bert()
    assert _perf_modules(ours) == {}
    assert isinstance(ours, BertModel)
    stock = BertModel(config=make_config(num_layers=LAYERS, hidden=HIDDEN, heads=HEADS), num_tokentypes=2,
                      transformer_layer_spec=bert_layer_local_spec, vocab_size=VOCAB, max_sequence_length=SEQ,
                      add_binary_head=True, share_embeddings_and_output_weights=True)
    assert _perf_modules(stock) == {}
    assert ours.attn_mask_dimensions == stock.attn_mask_dimensions == "b1ss"
    assert set(stock.state_dict()) == set(ours.state_dict())
    stock.load_state_dict(ours.state_dict(), strict=True)
    tokens, pad, types = _bert_inputs()
    outs = []
    for model in (ours, stock):
        lm, binary = model(tokens, pad, tokentype_ids=types, lm_labels=tokens)
        ((lm * pad).sum() / pad.sum() + binary.float().mean()).backward()
        logits, _ = model(tokens, pad, tokentype_ids=types)
        outs.append((lm.detach(), binary.detach(), logits.detach(), _grads(model)))
    (lm_o, bin_o, logits_o, g_o), (lm_s, bin_s, logits_s, g_s) = outs
    assert logits_s.shape == (3, SEQ, VOCAB) and logits_s.std() > 0
    assert torch.equal(lm_o, lm_s) and torch.equal(bin_o, bin_s) and torch.equal(logits_o, logits_s)
    assert set(g_o) == set(g_s) and "lm_head.dense.weight" in g_s
    for name in g_s:
        assert torch.equal(g_o[name], g_s[name]), name


# ----------------------------------------------------------------------------------------------------------
# (b) the table and the package agree


def _package_modules():
    return sorted(m.name for m in pkgutil.iter_modules(perf.__path__) if not m.name.startswith("_"))


def test_every_row_names_a_module_and_every_module_has_a_row():
    names = [row.name for row in SPEED_PATHS]
    assert len(names) == len(set(names))
    assert sorted(names) == _package_modules()
    for row in SPEED_PATHS:
        importlib.import_module(f"{perf.__name__}.{row.name}")
        for field in dataclasses.fields(row):
            assert getattr(row, field.name).strip(), (row.name, field.name)


def test_module_docstrings_state_the_row():
    """Flag, what it replaces, exactness and where it applies, with the row's flags and tolerances."""
    for row in SPEED_PATHS:
        doc = importlib.import_module(f"{perf.__name__}.{row.name}").__doc__ or ""
        for heading in ("Flag:", "Replaces:", "Exactness:", "Applies"):
            assert heading in doc, (row.name, heading)
        for flag in re.findall(r"--[a-z][a-z-]+", row.flag):
            assert flag in doc, (row.name, flag)
        claims = re.findall(r"1e-\d+|bitwise", row.exactness)
        assert claims, row.name
        for claim in claims:
            assert claim in doc, (row.name, claim)
        assert not re.search(r"\d\s*ms\b", doc), row.name  # measurements belong in docs/performance.md


def test_row_flags_are_real_cli_flags_and_stock_values_give_stock_options():
    from megatron.training.config import build_parser

    parser = build_parser()
    for row in SPEED_PATHS:
        for flag in re.findall(r"--[a-z][a-z-]+", row.flag):
            assert flag in parser._option_string_actions, (row.name, flag)
    stock = parser.parse_args(["--attention-backend", "local", "--linear-impl", "megatron",
                               "--mlm-head-positions", "all"])
    assert SpeedOptions.from_args(stock) == STOCK
    defaults = SpeedOptions.from_args(parser.parse_args([]))
    assert defaults == SpeedOptions(sdpa_attention=True, torch_linear=True, masked_positions_mlm=True)


# ----------------------------------------------------------------------------------------------------------
# (c) each flag changes exactly the modules it claims


def _expected_changes(flag: str, model) -> dict:
    from megatron.perf.sdpa_attention import SDPAttention
    from megatron.perf.torch_linear import (TorchColumnParallelLinear, TorchMLPInputLinear,
                                                     TorchRowParallelLinear)

    expected = {}
    for name, _ in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if flag == "sdpa_attention" and name.endswith("self_attention.core_attention"):
            expected[name] = SDPAttention
        if flag == "torch_linear":
            if leaf in ("linear_qkv", "output_layer"):
                expected[name] = TorchColumnParallelLinear
            elif leaf == "linear_fc1":
                expected[name] = TorchMLPInputLinear
            elif leaf in ("linear_proj", "linear_fc2"):
                expected[name] = TorchRowParallelLinear
    return expected


@pytest.mark.usefixtures("single_process_megatron")
@pytest.mark.parametrize("flag", [f.name for f in dataclasses.fields(SpeedOptions)])
def test_each_flag_changes_exactly_its_modules(flag):
    from megatron.core.models.bert.bert_layer_specs import bert_layer_local_spec
    from megatron.core.models.bert.bert_model import BertModel
    from megatron.core.models.gpt.gpt_model import GPTModel
    from megatron.perf.sdpa_attention import SDPABertModel
    from megatron.perf.sparse_mlm import MaskedPositionsBertModel

    options = SpeedOptions(**{flag: True})
    stock_bert_spec = repr(bert_layer_local_spec)
    for build in (_gpt, _bert):
        base, fast = build(STOCK), build(options)
        changed = _perf_modules(fast)
        assert changed == _expected_changes(flag, base), (build.__name__, flag)
        if flag != "masked_positions_mlm":
            assert len(changed) >= LAYERS, (build.__name__, flag)
        # the same module tree and the same weights: only classes differ
        assert [n for n, _ in fast.named_modules()] == [n for n, _ in base.named_modules()]
        base_state, fast_state = base.state_dict(), fast.state_dict()
        assert set(base_state) == set(fast_state)
        for key, value in base_state.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, fast_state[key]), key
        if build is _gpt:
            assert type(fast) is type(base) and issubclass(type(fast), GPTModel)
        else:
            assert isinstance(fast, SDPABertModel) == (flag == "sdpa_attention")
            assert isinstance(fast, MaskedPositionsBertModel) == (flag == "masked_positions_mlm")
            assert isinstance(fast, BertModel) and fast.attn_mask_dimensions == "b1ss"
            if flag not in ("sdpa_attention", "masked_positions_mlm"):
                assert type(fast) is type(base)
    assert repr(bert_layer_local_spec) == stock_bert_spec  # megatron's module-level spec is not modified


def test_layer_specs_carry_the_paths_and_leave_the_input_alone():
    from megatron.core.models.bert.bert_layer_specs import bert_layer_local_spec
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.perf.sdpa_attention import SDPAttention
    from megatron.perf.torch_linear import (TorchColumnParallelLinear, TorchMLPInputLinear,
                                                     TorchRowParallelLinear)

    for make, base in ((perf.layer_spec, get_gpt_layer_local_spec()),
                       (perf.layer_spec, bert_layer_local_spec)):
        assert make(base, STOCK) is base
        both = make(base, SpeedOptions(sdpa_attention=True, torch_linear=True))
        attn, mlp = both.submodules.self_attention.submodules, both.submodules.mlp.submodules
        assert attn.core_attention is SDPAttention
        assert (attn.linear_qkv, attn.linear_proj) == (TorchColumnParallelLinear, TorchRowParallelLinear)
        assert (mlp.linear_fc1, mlp.linear_fc2) == (TorchMLPInputLinear, TorchRowParallelLinear)
        assert both.submodules.self_attention.params == base.submodules.self_attention.params
        attn, mlp = base.submodules.self_attention.submodules, base.submodules.mlp.submodules
        assert attn.core_attention is DotProductAttention
        assert (attn.linear_qkv, attn.linear_proj) == (ColumnParallelLinear, RowParallelLinear)
        assert (mlp.linear_fc1, mlp.linear_fc2) == (ColumnParallelLinear, RowParallelLinear)


@pytest.mark.usefixtures("single_process_megatron")
def test_only_the_output_layer_changes_class_after_construction(monkeypatch):
    """Layer linears are built as the subclasses; the post-construction swap is left with the output layer."""
    from megatron.core.tensor_parallel.layers import ColumnParallelLinear
    from megatron.perf.torch_linear import (TorchColumnParallelLinear, TorchMLPInputLinear,
                                                     TorchRowParallelLinear, use_torch_linears)

    options = SpeedOptions(torch_linear=True)
    monkeypatch.setattr(perf, "apply_to_model", lambda model, *a, **k: model)  # construction only
    built = _gpt(options)
    for layer in built.decoder.layers:
        attn, mlp = layer.self_attention, layer.mlp
        assert type(attn.linear_qkv) is TorchColumnParallelLinear and type(mlp.linear_fc1) is TorchMLPInputLinear
        assert type(attn.linear_proj) is TorchRowParallelLinear and type(mlp.linear_fc2) is TorchRowParallelLinear
        assert all(m._torch_path for m in (attn.linear_qkv, attn.linear_proj, mlp.linear_fc1, mlp.linear_fc2))
        assert mlp.linear_fc1._fold_bias  # no bias-activation fusion in this config
    assert type(built.output_layer) is ColumnParallelLinear
    assert use_torch_linears(built) == 1  # the output layer, and nothing else
    assert type(built.output_layer) is TorchColumnParallelLinear and built.output_layer._torch_path
    monkeypatch.undo()

    fast = _gpt(options)
    assert type(fast.output_layer) is TorchColumnParallelLinear
    assert use_torch_linears(fast) == 0  # nothing stock left
    assert use_torch_linears(_gpt(STOCK)) == 4 * LAYERS + 1  # what a swap of a stock model has to do


@pytest.mark.usefixtures("single_process_megatron")
def test_bert_model_class_is_one_class_per_options():
    from megatron.core.models.bert.bert_model import BertModel
    from megatron.perf.sdpa_attention import SDPABertModel
    from megatron.perf.sparse_mlm import MaskedPositionsBertModel

    assert perf.bert_model_class(STOCK) is BertModel
    both = SpeedOptions(sdpa_attention=True, masked_positions_mlm=True)
    cls = perf.bert_model_class(both)
    assert cls is perf.bert_model_class(SpeedOptions(sdpa_attention=True, masked_positions_mlm=True))
    assert issubclass(cls, SDPABertModel) and issubclass(cls, MaskedPositionsBertModel)
    model = _bert(dataclasses.replace(both, torch_linear=True))
    assert isinstance(model, cls) and model.attn_mask_dimensions == "b1ss"


# ----------------------------------------------------------------------------------------------------------
# CPU shim: only in CPU mode


def test_cpu_mode_wanted(monkeypatch):
    from megatron.perf import cpu_compat

    monkeypatch.delenv("MEGATRON_FORCE_CPU", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cpu_compat.cpu_mode_wanted(False) is False
    assert cpu_compat.cpu_mode_wanted(True) is True
    monkeypatch.setenv("MEGATRON_FORCE_CPU", "1")
    assert cpu_compat.cpu_mode_wanted(False) is True
    monkeypatch.delenv("MEGATRON_FORCE_CPU")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cpu_compat.cpu_mode_wanted(False) is True


def test_install_process_wide_enables_the_shim_only_in_cpu_mode(monkeypatch):
    from megatron.perf import cpu_compat

    calls = []
    monkeypatch.delenv("MEGATRON_FORCE_CPU", raising=False)
    monkeypatch.setattr(cpu_compat, "enable_cpu_mode", lambda: calls.append("enable"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert "cpu_compat" not in perf.install_process_wide(force_cpu=False) and calls == []
    assert "cpu_compat" in perf.install_process_wide(force_cpu=True) and calls == ["enable"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "cpu_compat" in perf.install_process_wide(force_cpu=False) and calls == ["enable", "enable"]


def test_install_process_wide_really_enables_cpu_mode_here():
    from megatron.perf import cpu_compat

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: CPU mode is not wanted here")
    perf.install_process_wide()
    assert cpu_compat.is_cpu_mode() and cpu_compat.default_backend() == "gloo"
    assert torch.cuda.current_device() == torch.device("cpu")
