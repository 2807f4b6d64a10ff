"""The arithmetic behind --dry-run and --log-throughput against real models: parameter counts equal the numel of
the megatron-core models the entry points build from the same flags, and the FLOP count equals what torch's FLOP
counter sees in a forward + backward."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.usefixtures("single_process_megatron")

BASE = ["--num-layers", "3", "--hidden-size", "32", "--num-attention-heads", "4", "--seq-length", "16",
        "--max-position-embeddings", "24", "--micro-batch-size", "2", "--train-iters", "1", "--lr", "1e-3", "--mock-data",
        "--vocab-size", "100", "--use-cpu-initialization", "--init-scheme", "dslm", "--attention-backend", "local",
        "--hidden-dropout", "0", "--attention-dropout", "0"]
SHAPES = {
    "gpt": [],
    "gpt-untied": ["--untie-embeddings-and-output-weights"],
    "llama": ["--swiglu", "--normalization", "RMSNorm", "--position-embedding-type", "rope",
              "--group-query-attention", "--num-query-groups", "2", "--disable-bias-linear",
              "--untie-embeddings-and-output-weights", "--qk-layernorm"],
    "bert": [],
    "bert-post-ln-no-binary": ["--apply-residual-connection-post-layernorm", "--bert-no-binary-head"],
}


def _model(name):
    """The entry point's model for SHAPES[name], built in this process exactly as pretrain() builds it."""
    import pretrain_bert
    import pretrain_gpt
    from megatron.training import global_vars
    from megatron.training.training import parse_args
    from megatron.training.validate import validate_args

    bert = name.startswith("bert")
    entry = pretrain_bert if bert else pretrain_gpt
    defaults = {"tokenizer_type": "NullTokenizer", "num_tokentypes": 2} if bert else None
    args = parse_args(pretrain_bert.add_bert_args if bert else None, defaults, BASE + SHAPES[name])
    validate_args(args, 1)
    args.padded_vocab_size, args.embedding_corr = 128, 0.2
    global_vars.set_args(args)
    from megatron.training.model_setup import transformer_config_from_args

    return args, entry.model_provider(config=transformer_config_from_args(args))


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_parameter_count_equals_the_built_model(name):
    from megatron.training.model_setup import model_arch_from_args
    from megatron.training.model_size import stage_params

    args, model = _model(name)
    arch = model_arch_from_args(args, "bert" if name.startswith("bert") else "gpt")
    (counted,) = stage_params(arch, 1, args.max_position_embeddings,
                              bert_binary_head=not getattr(args, "bert_no_binary_head", False))
    assert counted == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["gpt", "llama"])
def test_flops_per_token_equal_torch_flop_counter(name):
    from torch.utils.flop_counter import FlopCounterMode

    from megatron.training.model_setup import model_arch_from_args
    from megatron.training.model_size import flops_per_token

    args, model = _model(name)
    batch, seq = 2, args.seq_length
    tokens = torch.randint(0, 100, (batch, seq))
    position_ids = torch.arange(seq).unsqueeze(0).expand(batch, seq)
    with FlopCounterMode(display=False) as counter:
        model(tokens, position_ids, None, labels=tokens).float().sum().backward()
    arch = model_arch_from_args(args, "gpt")
    assert flops_per_token(arch) * batch * seq == counter.get_total_flops()
