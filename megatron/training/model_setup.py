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
        activation_func=ffn_activation(args),
        init_method_std=args.init_method_std,
        **decoder_shape_from_args(args),
        tensor_model_parallel_size=args.tensor_model_parallel_size,
        pipeline_model_parallel_size=args.pipeline_model_parallel_size,
        sequence_parallel=getattr(args, "sequence_parallel", False),
        use_cpu_initialization=args.use_cpu_initialization,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=args.bf16,
        fp16=args.fp16,
        # Fusions: on where the device and kernels allow, off in CPU mode (fusion_settings decides).
        **fusions_from_args(args),
        # Pre-/Post-LN: the model builders read it from here alone (megatron.dslm.mcore.models).
        apply_residual_connection_post_layernorm=args.apply_residual_connection_post_layernorm,
        # megatron-core's local core attention: mask + softmax in fp32 under fp16/bf16 (torch's SDPA kernels
        # already keep the softmax in fp32)
        attention_softmax_in_fp32=getattr(args, "attention_softmax_in_fp32", False),
        **recompute,
    )


def decoder_shape_from_args(args) -> dict:
    """TransformerConfig fields of today's decoder shape, from upstream's flags (megatron-core implements each:
    gated MLP, torch RMSNorm, grouped query/key/value projection, bias-free linears, q/k norms)."""
    gqa = getattr(args, "group_query_attention", False)
    return dict(
        gated_linear_unit=bool(getattr(args, "swiglu", False)),
        normalization=getattr(args, "normalization", "LayerNorm"),
        layernorm_epsilon=getattr(args, "norm_epsilon", 1e-5),
        layernorm_zero_centered_gamma=bool(getattr(args, "apply_layernorm_1p", False)),
        num_query_groups=args.num_query_groups if gqa else None,
        add_bias_linear=bool(getattr(args, "add_bias_linear", True)),
        qk_layernorm=bool(getattr(args, "qk_layernorm", False)),
    )


def gpt_model_kwargs(args) -> dict:
    """GPTModel's constructor arguments that are flags: output-layer tying and the position embedding."""
    return dict(
        share_embeddings_and_output_weights=not args.untie_embeddings_and_output_weights,
        position_embedding_type=getattr(args, "position_embedding_type", "learned_absolute"),
        rotary_percent=getattr(args, "rotary_percent", 1.0),
        rotary_base=getattr(args, "rotary_base", 10000),
        seq_len_interpolation_factor=getattr(args, "rotary_seq_len_interpolation_factor", None),
    )


# Decoder-shape flags the BERT builder does not take (its layer spec and BertModel are not extended here).
_GPT_ONLY_FLAGS = (("swiglu", False, "--swiglu"), ("normalization", "LayerNorm", "--normalization RMSNorm"),
                   ("apply_layernorm_1p", False, "--apply-layernorm-1p"),
                   ("position_embedding_type", "learned_absolute", "--position-embedding-type"),
                   ("group_query_attention", False, "--group-query-attention"),
                   ("add_bias_linear", True, "--disable-bias-linear"), ("qk_layernorm", False, "--qk-layernorm"),
                   ("untie_embeddings_and_output_weights", False, "--untie-embeddings-and-output-weights"))


def refuse_gpt_only_flags(args, model_type: str) -> None:
    from megatron.training.validate import ConfigError

    if model_type == "gpt":
        return
    for dest, default, flag in _GPT_ONLY_FLAGS:
        if getattr(args, dest, default) != default:
            raise ConfigError(f"{flag} is supported for GPT models only (pretrain_gpt.py): the {model_type} "
                              "layer spec and model here keep the original LayerNorm / GeLU / learned-position "
                              "shape")


def ffn_activation(args):
    """The FFN's activation: SiLU gate (--swiglu), ReLU, GeLU by the tanh approximation (--openai-gelu) or exact."""
    if getattr(args, "swiglu", False):
        return F.silu
    if args.activation == "relu":
        return F.relu
    if getattr(args, "openai_gelu", False):
        from megatron.core.transformer.utils import openai_gelu

        return openai_gelu
    return F.gelu


# (TransformerConfig field, upstream flag dest, the flag that turns it off, kernel it needs or None). Bias-GeLU and
# bias-dropout-add are torch-compiled in megatron-core and need no extension.
FUSIONS = (
    ("bias_activation_fusion", "bias_gelu_fusion", "--no-bias-gelu-fusion", None),
    ("bias_dropout_fusion", "bias_dropout_fusion", "--no-bias-dropout-fusion", None),
    ("masked_softmax_fusion", "masked_softmax_fusion", "--no-masked-softmax-fusion", "fused_softmax"),
    ("gradient_accumulation_fusion", "gradient_accumulation_fusion", "--no-gradient-accumulation-fusion",
     "fused_weight_gradient"),
    ("persist_layer_norm", "persist_layer_norm", "--no-persist-layer-norm", "fast_layer_norm"),
)
# Kernel -> (the modules megatron-core 0.16 imports for it, what provides them). Transformer Engine provides none:
# the layers here are megatron-core's local ones (ColumnParallelLinear refuses gradient_accumulation_fusion
# without fused_weight_gradient_mlp_cuda, FusedScaleMaskSoftmax imports the *_softmax_cuda modules).
FUSION_KERNELS = {
    "fused_softmax": (("scaled_upper_triang_masked_softmax_cuda", "scaled_masked_softmax_cuda",
                       "scaled_softmax_cuda"), "apex built with --cuda_ext"),
    "fused_weight_gradient": (("fused_weight_gradient_mlp_cuda",), "apex built with --cpp_ext --cuda_ext"),
    "fast_layer_norm": (("apex.contrib.layer_norm.layer_norm",), "apex built with --fast_layer_norm"),
}


def fusion_kernels() -> dict:
    """Which of :data:`FUSION_KERNELS` import on this machine."""
    import importlib

    def importable(name: str) -> bool:
        try:
            importlib.import_module(name)
        except Exception:  # a missing module, or an extension built for another torch/CUDA
            return False
        return True

    return {key: all(importable(m) for m in modules) for key, (modules, _) in FUSION_KERNELS.items()}


def fusion_settings(args, cuda: bool, kernels: dict):
    """``({TransformerConfig field: on}, start-up lines)``: each fusion is on unless its ``--no-*`` flag was
    given, the run is in CPU mode, or what it needs is missing (then one line says which and why)."""
    if not cuda:
        return {field: False for field, *_ in FUSIONS}, ["> fusions: none (CPU mode)"]
    settings, lines = {}, []
    for field, dest, flag, kernel in FUSIONS:
        wanted, why = bool(getattr(args, dest, True)), None
        if wanted and kernel is not None and not kernels.get(kernel, False):
            modules, source = FUSION_KERNELS[kernel]
            why = f"{', '.join(modules)} not importable (needs {source})"
        elif (wanted and field == "bias_activation_fusion" and not getattr(args, "swiglu", False)
              and getattr(args, "activation", "gelu") != "gelu"):
            why = f"megatron-core fuses the bias with GeLU only (--activation {args.activation})"
        elif wanted and field == "bias_activation_fusion" and getattr(args, "openai_gelu", False):
            why = "megatron-core fuses the bias with exact GeLU or SwiGLU only (--openai-gelu)"
        elif (wanted and field == "bias_activation_fusion" and not getattr(args, "swiglu", False)
              and not getattr(args, "add_bias_linear", True)):
            why = "--disable-bias-linear: no bias to fuse with GeLU (as upstream)"
        settings[field] = wanted and why is None
        if why is not None:
            lines.append(f"> {field} off: {why}")
    lines.append("> fusions on: " + (", ".join(f for f, on in settings.items() if on) or "none"))
    return settings, lines


def fusions_from_args(args) -> dict:
    """:func:`fusion_settings` for this process (CPU mode, kernels probed on CUDA only), printed on rank 0."""
    from megatron.training.global_vars import print_rank_0
    from megatron.perf import cpu_compat

    cuda = not (cpu_compat.is_cpu_mode() or cpu_compat.cpu_mode_wanted(getattr(args, "cpu", False)))
    settings, lines = fusion_settings(args, cuda, fusion_kernels() if cuda else {})
    for line in lines:
        print_rank_0(line)
    return settings


def model_arch_from_args(args, model_type: str = "gpt") -> ModelArch:
    """The parallel-layout-free description that schemes and the theory predictor read."""
    vocab = getattr(args, "padded_vocab_size", None) or args.vocab_size
    return model_arch(args, model_type=model_type, vocab_size=vocab)


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
        from megatron.dslm.mcore.data import indexed_dataset_windows
        from megatron.training.datasets import checked_dataset

        checked_dataset(prefixes[0], vocab_size=getattr(args, "padded_vocab_size", None))  # before megatron-core
        windows = list(indexed_dataset_windows(prefixes[0], args.seq_length, max_sequences))
        args.embedding_corr = estimate_embedding_corr(windows, tables).embedding_corr
        return f"measured on {len(windows)} windows of {prefixes[0]}"
    args.embedding_corr = DEFAULT_EMBEDDING_CORR
    return "the reference's default (no data to measure)"


def init_table_from_args(args, model_type: str = "gpt") -> InitTable:
    from megatron.dslm.schemes.registry import build_init_table

    refuse_gpt_only_flags(args, model_type)
    return build_init_table(args.init_scheme, model_arch_from_args(args, model_type))
