"""From parsed flags to the objects megatron-core and DSLM take: TransformerConfig, ModelArch, InitTable."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from megatron.dslm.config import DEFAULT_EMBEDDING_CORR, model_arch
from megatron.dslm.contract import InitTable, ModelArch


def params_dtype_from_args(args) -> torch.dtype:
    return torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else torch.float32


def transformer_config_from_args(args):
    """A megatron-core TransformerConfig; TP/PP are passed too (else every stage builds all layers).

    Recompute flags keep upstream meanings (--recompute-activations = selective). megatron-core's own
    checks of the config become a ConfigError: one line at start-up instead of a traceback.
    """
    from megatron.core.transformer import TransformerConfig
    from megatron.training.validate import ConfigError

    dtype = params_dtype_from_args(args)
    granularity = getattr(args, "recompute_granularity", None)
    if getattr(args, "recompute_activations", False) and granularity is None:
        granularity = "selective"
    recompute = dict(recompute_granularity=granularity, recompute_method=getattr(args, "recompute_method", None),
                     recompute_num_layers=getattr(args, "recompute_num_layers", None))
    try:
        return _transformer_config(TransformerConfig, args, dtype, recompute)
    except ValueError as err:
        raise ConfigError(f"invalid transformer configuration: {err}") from None


def _transformer_config(TransformerConfig, args, dtype, recompute):
    return TransformerConfig(
        num_layers=args.num_layers,
        hidden_size=args.hidden_size,
        ffn_hidden_size=args.ffn_hidden_size,
        num_attention_heads=args.num_attention_heads,
        kv_channels=args.kv_channels,
        hidden_dropout=args.hidden_dropout,
        attention_dropout=args.attention_dropout,
        activation_func=F.relu if args.activation == "relu" else F.gelu,
        init_method_std=args.init_method_std,
        tensor_model_parallel_size=args.tensor_model_parallel_size,
        pipeline_model_parallel_size=args.pipeline_model_parallel_size,
        use_cpu_initialization=args.use_cpu_initialization,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=args.bf16,
        fp16=args.fp16,
        # Fusions need apex/TE kernels; off keeps both CPU and plain-PyTorch GPU installs working.
        gradient_accumulation_fusion=False,
        bias_activation_fusion=False,
        masked_softmax_fusion=False,
        bias_dropout_fusion=False,
        persist_layer_norm=False,
        # Pre-/Post-LN: the model builders read it from here alone (megatron.dslm.mcore.models).
        apply_residual_connection_post_layernorm=args.apply_residual_connection_post_layernorm,
        **recompute,
    )


def model_arch_from_args(args, model_type: str = "gpt") -> ModelArch:
    """The parallel-layout-free description that schemes and the theory predictor read."""
    vocab = getattr(args, "padded_vocab_size", None) or args.vocab_size
    return model_arch(args, model_type=model_type, vocab_size=vocab)


def indexed_dataset_windows(path_prefix: str, seq_length: int, max_sequences: int):
    """Consecutive windows of ``seq_length`` tokens over the documents of a megatron indexed dataset."""
    import os

    import numpy as np
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    for suffix in (".idx", ".bin"):
        if not os.path.exists(path_prefix + suffix):
            raise FileNotFoundError(f"no indexed dataset at {path_prefix!r} ({path_prefix + suffix} missing)")
    dataset = IndexedDataset(path_prefix)
    produced = 0
    buffer = np.zeros(0, dtype=np.int64)
    for idx in range(len(dataset)):
        buffer = np.concatenate([buffer, np.asarray(dataset[idx], dtype=np.int64)])
        while buffer.size >= seq_length:
            yield buffer[:seq_length]
            buffer = buffer[seq_length:]
            produced += 1
            if produced >= max_sequences:
                return
    if buffer.size >= 2 and produced < max_sequences:
        yield buffer


def resolve_embedding_corr(args, max_sequences: int = 2000) -> str:
    """Fill ``args.embedding_corr`` (r0, the token correlation DSLM's V/O init assumes) from the data actually fed.

    DSLM holds unit variance only when the input carries the correlation the init assumes, and r0 is a property
    of the corpus and the embedding tables (GPT text ~0.01, BERT with token types ~0.4), not the reference's
    constant (docs/theory.md, "Embedding correlation r0"). Returns a phrase saying where the value came from.
    """
    from megatron.dslm.embedding_corr import corr_from_probs, estimate_embedding_corr
    from megatron.training.datasets import data_prefixes

    tables = 3 if args.num_tokentypes else 2
    if args.embedding_corr is not None:
        return "given by --embedding-corr"
    if args.mock_data:
        args.embedding_corr = corr_from_probs(1.0 / args.padded_vocab_size, tables)
        return "mock data (uniform random tokens: DSLM's correlation premise does not hold)"
    prefixes = data_prefixes(args.data_path)
    if prefixes:
        windows = list(indexed_dataset_windows(prefixes[0], args.seq_length, max_sequences))
        args.embedding_corr = estimate_embedding_corr(windows, tables).embedding_corr
        return f"measured on {len(windows)} windows of {prefixes[0]}"
    args.embedding_corr = DEFAULT_EMBEDDING_CORR
    return "the reference's default (no data to measure)"


def init_table_from_args(args, model_type: str = "gpt") -> InitTable:
    from megatron.dslm.schemes.registry import build_init_table

    return build_init_table(args.init_scheme, model_arch_from_args(args, model_type))
