"""From parsed flags to the objects megatron-core and DSLM take: TransformerConfig, ModelArch, InitTable."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from megatron.dslm.contract import InitTable, ModelArch

DEFAULT_EMBEDDING_CORR = 0.221  # the reference's hard-coded r0; used only when nothing was measured


def params_dtype_from_args(args) -> torch.dtype:
    return torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else torch.float32


def transformer_config_from_args(args):
    """A megatron-core TransformerConfig; TP/PP are passed too (else every stage builds all layers)."""
    from megatron.core.transformer import TransformerConfig

    dtype = params_dtype_from_args(args)
    recompute = dict(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1) \
        if args.recompute_activations else {}
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
        **recompute,
    )


def model_arch_from_args(args, model_type: str = "gpt") -> ModelArch:
    """The parallel-layout-free description that schemes and the theory predictor read."""
    vocab = getattr(args, "padded_vocab_size", None) or args.vocab_size or 30522
    corr = args.embedding_corr if args.embedding_corr is not None else DEFAULT_EMBEDDING_CORR
    return ModelArch(
        num_layers=args.num_layers,
        hidden_size=args.hidden_size,
        num_attention_heads=args.num_attention_heads,
        seq_length=args.seq_length,
        vocab_size=vocab,
        ffn_hidden_size=args.ffn_hidden_size,
        kv_channels=args.kv_channels,
        model_type=model_type,
        num_tokentypes=args.num_tokentypes,
        hidden_dropout=args.hidden_dropout,
        attention_dropout=args.attention_dropout,
        post_ln=args.apply_residual_connection_post_layernorm,
        activation=args.activation,
        embedding_corr=corr,
        dslm_k=args.dslm_k,
        residual_lambda_sq=args.residual_lambda_sq,
        residual_beta_sq=args.residual_beta_sq,
        allow_unnormalized_residual=args.allow_unnormalized_residual,
        init_method_std=args.init_method_std,
    )


def resolve_embedding_corr(args, max_sequences: int = 2000) -> str:
    """Fill ``args.embedding_corr`` (r0, the token correlation DSLM's V/O init assumes) from the data actually fed.

    theory.md: DSLM holds unit variance only when the input carries the correlation the init assumes, and r0 is a
    property of the corpus and the embedding tables (GPT text ~0.01, BERT with token types ~0.4), not the
    reference's constant 0.221. Returns a phrase saying where the value came from.
    """
    from megatron.dslm.estimate_corr import corr_from_probs, estimate_embedding_corr, indexed_dataset_windows
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
