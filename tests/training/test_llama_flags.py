"""Upstream's decoder-shape flags: parsed with upstream meanings and defaults, sized and checked at start-up,
mapped onto megatron-core's TransformerConfig and GPTModel arguments."""

import pytest

from megatron.training.config import build_parser
from megatron.training.validate import ConfigError, validate_args

BASE = ["--num-layers", "4", "--hidden-size", "96", "--num-attention-heads", "8", "--seq-length", "32",
        "--micro-batch-size", "2", "--train-iters", "1", "--lr", "1e-3", "--mock-data", "--vocab-size", "100"]


def parse(*flags, world=1):
    args = build_parser().parse_args(BASE + list(flags))
    validate_args(args, world)
    return args


def test_defaults_are_the_2019_transformer():
    from megatron.dslm.config import model_arch

    args = parse()
    assert (args.normalization, args.norm_epsilon, args.position_embedding_type, args.rotary_base) == \
        ("LayerNorm", 1e-5, "learned_absolute", 10000)
    assert args.add_bias_linear and not args.swiglu and args.ffn_hidden_size == 4 * 96
    arch = model_arch(args)
    assert (arch.gated_linear_unit, arch.normalization, arch.num_query_groups, arch.add_bias_linear) == \
        (False, "LayerNorm", None, True)


def test_swiglu_sizes_ffn_as_upstream_and_arch_follows():
    from megatron.dslm.config import model_arch

    args = parse("--swiglu", "--normalization", "RMSNorm", "--position-embedding-type", "rope",
                 "--group-query-attention", "--num-query-groups", "2", "--disable-bias-linear",
                 "--untie-embeddings-and-output-weights", "--qk-layernorm", "--rotary-percent", "0.5")
    assert args.ffn_hidden_size == int(4 * 96 * 2 / 3 / 64) * 64 == 256
    arch = model_arch(args)
    assert (arch.gated_linear_unit, arch.activation, arch.normalization, arch.position_embedding_type) == \
        (True, "silu", "RMSNorm", "rope")
    assert (arch.num_query_groups, arch.add_bias_linear, arch.untie_embeddings_and_output_weights,
            arch.qk_layernorm, arch.rotary_percent, arch.num_embedding_tables) == (2, False, True, True, 0.5, 1)
    assert parse("--swiglu", "--ffn-hidden-size", "100").ffn_hidden_size == 100


def test_num_query_groups_counts_only_with_group_query_attention():
    from megatron.dslm.config import model_arch

    assert model_arch(parse("--num-query-groups", "2")).num_query_groups is None  # upstream: ignored


@pytest.mark.parametrize("flags,message", [
    (["--group-query-attention", "--num-query-groups", "3"], "not divisible by --num-query-groups 3"),
    (["--group-query-attention", "--num-query-groups", "2", "--tensor-model-parallel-size", "4"],
     "--num-query-groups 2 is not divisible by TP size 4"),
    (["--position-embedding-type", "rope", "--rotary-percent", "0.1"], "rotary channels"),
    (["--rotary-percent", "1.5"], "--rotary-percent must be in (0, 1]"),
    (["--swiglu", "--activation", "relu"], "drop --activation relu"),
    (["--norm-epsilon", "0"], "--norm-epsilon must be positive"),
])
def test_bad_combinations_are_one_line_errors(flags, message):
    world = 4 if "--tensor-model-parallel-size" in flags else 1
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(*flags, world=world)


def test_transformer_config_and_gpt_kwargs():
    import torch.nn.functional as F

    from megatron.training.model_setup import gpt_model_kwargs, transformer_config_from_args

    args = parse("--swiglu", "--normalization", "RMSNorm", "--norm-epsilon", "1e-6", "--apply-layernorm-1p",
                 "--position-embedding-type", "rope", "--rotary-base", "500000",
                 "--rotary-seq-len-interpolation-factor", "2", "--group-query-attention", "--num-query-groups", "4",
                 "--disable-bias-linear", "--untie-embeddings-and-output-weights", "--qk-layernorm", "--cpu")
    args.use_cpu_initialization = True
    config = transformer_config_from_args(args)
    assert config.gated_linear_unit and config.activation_func is F.silu and config.ffn_hidden_size == 256
    assert (config.normalization, config.layernorm_epsilon, config.layernorm_zero_centered_gamma) == \
        ("RMSNorm", 1e-6, True)
    assert (config.num_query_groups, config.add_bias_linear, config.qk_layernorm) == (4, False, True)
    assert gpt_model_kwargs(args) == dict(share_embeddings_and_output_weights=False, position_embedding_type="rope",
                                          rotary_percent=1.0, rotary_base=500000, seq_len_interpolation_factor=2)


def test_bert_refuses_the_gpt_only_flags():
    from megatron.training.model_setup import refuse_gpt_only_flags

    with pytest.raises(ConfigError, match="--swiglu is supported for GPT models only"):
        refuse_gpt_only_flags(parse("--swiglu"), "bert")
    refuse_gpt_only_flags(parse("--swiglu"), "gpt")
    refuse_gpt_only_flags(parse(), "bert")
