"""Command-line configuration as grouped dataclasses: each field is one upstream-named flag, its help the `--help`.

Flags keep upstream Megatron-LM names (``--num-layers`` ...), so existing launch scripts work. The parsed values
land in one flat ``argparse.Namespace`` (what entry scripts and upstream users expect); library code receives
plain values, never the namespace.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import List, Optional


def _f(default, help: str, **meta):
    """A dataclass field carrying its --help text (and optional argparse extras such as nargs/choices)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class ModelFlags:
    num_layers: Optional[int] = _f(None, "Number of transformer layers (N).")
    hidden_size: Optional[int] = _f(None, "Transformer hidden size (d).")
    ffn_hidden_size: Optional[int] = _f(None, "FFN hidden size; default 4 * hidden size.")
    num_attention_heads: Optional[int] = _f(None, "Number of attention heads.")
    kv_channels: Optional[int] = _f(None, "Per-head size; default hidden size / heads.")
    seq_length: Optional[int] = _f(None, "Sequence length of training samples.")
    max_position_embeddings: Optional[int] = _f(None, "Size of the position table; default seq length.")
    init_method_std: float = _f(0.02, "Std of the 'megatron' init scheme.")
    hidden_dropout: float = _f(0.1, "Dropout on sub-layer outputs and embeddings.")
    attention_dropout: float = _f(0.1, "Dropout on attention probabilities.")
    activation: str = _f("gelu", "FFN activation.", choices=["gelu", "relu"])
    apply_residual_connection_post_layernorm: bool = _f(
        False, "Post-LN: x' = LN(lambda*x + beta*F(x)) after each sub-layer, plus an embedding LayerNorm "
        "(original BERT). Default is Pre-LN: x' = lambda*x + beta*F(LN(x)) with a final LayerNorm.")
    make_vocab_size_divisible_by: int = _f(128, "Pad the vocabulary to a multiple of this times TP size.")
    vocab_size: Optional[int] = _f(None, "Vocabulary size for --tokenizer-type NullTokenizer (mock data).")
    untie_embeddings_and_output_weights: bool = _f(False, "Separate output-layer weights (GPT).")
    attention_backend: str = _f("auto", "Attention core: 'local' (megatron-core's unfused), 'sdpa' "
                                "(torch scaled_dot_product_attention), 'auto' (the fastest available).",
                                choices=["auto", "local", "sdpa"])
    linear_impl: str = _f("torch", "TP linears: 'torch' (F.linear with the bias folded in wherever the layer "
                          "has nothing to communicate, i.e. TP=1 without sequence parallelism or fused grad "
                          "accumulation; megatron-core's own path otherwise) or 'megatron' (always "
                          "megatron-core's autograd Function, bit-for-bit stock).", choices=["torch", "megatron"])


@dataclass
class DSLMFlags:
    init_scheme: str = _f("megatron", "Weight-init scheme (and its residual scaling): megatron (default "
                          "sigma=0.02, output projections 0.02/sqrt(2N)), xavier, dslm, dslm-simplified, deepnet, "
                          "dsinit.")
    dslm_k: float = _f(1.0, "DSLM residual scaling: beta^2 = k/N, lambda^2 = 1 - beta^2.")
    residual_lambda_sq: Optional[float] = _f(None, "Explicit lambda^2 of x' = lambda*x + beta*F(x).")
    residual_beta_sq: Optional[float] = _f(None, "Explicit beta^2 of x' = lambda*x + beta*F(x).")
    allow_unnormalized_residual: bool = _f(False, "Accept lambda^2 + beta^2 != 1.")
    embedding_corr: Optional[float] = _f(
        None, "Token correlation r0 of the embedding output assumed by DSLM's V/O init. Default: measured "
        "on the training data when --data-path is given (python -m megatron.dslm.estimate_corr), else 0.221.")
    log_moments_interval: int = _f(0, "Every N iterations record per-layer moments (0 = never). "
                                   "'--log-moments-interval 1 --train-iters 1' profiles at init.")
    moments_file: Optional[str] = _f(None, "JSONL for moment records; default <tensorboard-dir or save>/moments.jsonl.")


@dataclass
class ParallelFlags:
    tensor_model_parallel_size: int = _f(1, "Tensor-parallel size.")
    pipeline_model_parallel_size: int = _f(1, "Pipeline-parallel size.")
    use_distributed_optimizer: bool = _f(False, "Shard optimizer state across data-parallel ranks.")
    grad_buffer_impl: str = _f("direct", "Gradients in megatron-core DDP's grad buffer: 'direct' (each param.grad "
                               "is a view of the buffer, so autograd accumulates there without megatron's "
                               "per-parameter hooks, and the grad norm/clip is one op on the buffer; used only "
                               "where exact: fp32 grads in an fp32 buffer, no overlapped reduction, TP=PP=1 for "
                               "the norm) or 'megatron' (always megatron-core's hooks and list-based norm).",
                               choices=["direct", "megatron"])
    cpu: bool = _f(False, "Force CPU mode (gloo) even when CUDA is available.")
    distributed_timeout_minutes: int = _f(10, "Timeout of collective operations.")


@dataclass
class TrainingFlags:
    micro_batch_size: Optional[int] = _f(None, "Samples per micro-batch per data-parallel rank.")
    global_batch_size: Optional[int] = _f(None, "Samples per optimizer step; default micro x DP.")
    train_iters: Optional[int] = _f(None, "Number of optimizer steps.")
    lr: Optional[float] = _f(None, "Peak learning rate.")
    min_lr: float = _f(0.0, "Learning rate floor of the decay.")
    lr_decay_style: str = _f("linear", "Decay after warmup.", choices=["constant", "linear", "cosine",
                                                                      "inverse-square-root"])
    lr_decay_iters: Optional[int] = _f(None, "Steps over which to decay; default --train-iters.")
    lr_warmup_fraction: Optional[float] = _f(None, "Warmup as a fraction of the decay steps.")
    lr_warmup_iters: int = _f(0, "Warmup steps (use this or --lr-warmup-fraction).")
    weight_decay: float = _f(0.01, "Decoupled weight decay (AdamW).")
    clip_grad: float = _f(1.0, "Clip the global gradient norm to this (0 = off).")
    adam_beta1: float = _f(0.9, "Adam beta1.")
    adam_beta2: float = _f(0.999, "Adam beta2.")
    adam_eps: float = _f(1e-8, "Adam epsilon.")
    seed: int = _f(1234, "Random seed (weights, data order, dropout).")
    bf16: bool = _f(False, "bf16 mixed precision (GPU).")
    fp16: bool = _f(False, "fp16 mixed precision with dynamic loss scaling (GPU).")
    loss_scale: Optional[float] = _f(None, "Static fp16 loss scale; default dynamic.")
    initial_loss_scale: float = _f(2.0 ** 32, "Initial dynamic loss scale.")
    use_cpu_initialization: bool = _f(False, "Build weights on CPU (layout-independent values are ours anyway).")
    recompute_activations: bool = _f(False, "Recompute each layer's activations in backward (saves memory).")


@dataclass
class DataFlags:
    data_path: List[str] = _f([], "Indexed dataset prefixes, optionally weighted: '0.7 a 0.3 b'.", nargs="*")
    split: str = _f("969,30,1", "Train/valid/test split of --data-path documents.")
    mock_data: bool = _f(False, "Synthetic random token ids (smoke tests; breaks DSLM's correlation premise).")
    tokenizer_type: Optional[str] = _f(None, "BertWordPieceLowerCase, BertWordPieceCase, GPT2BPETokenizer, "
                                       "HuggingFaceTokenizer or NullTokenizer.")
    vocab_file: Optional[str] = _f(None, "vocab.txt (WordPiece) or vocab.json (GPT-2 BPE).")
    merge_file: Optional[str] = _f(None, "merges.txt (GPT-2 BPE).")
    tokenizer_model: Optional[str] = _f(None, "tokenizer.json or its directory (HuggingFaceTokenizer).")
    data_cache_path: Optional[str] = _f(None, "Where megatron-core caches dataset indices.")
    num_workers: int = _f(0, "DataLoader worker processes.")
    mask_prob: float = _f(0.15, "BERT: probability of masking a token.")
    short_seq_prob: float = _f(0.1, "BERT: probability of a shorter sample.")
    bert_no_binary_head: bool = _f(False, "BERT: drop the sentence-order/next-sentence head.")
    mlm_head_positions: str = _f("masked", "BERT: run the masked-LM head and vocabulary projection on the "
                                 "'masked' (loss) positions only, or on 'all' tokens (stock megatron-core). "
                                 "Same loss; 'masked' skips ~85% of the largest matmul.",
                                 choices=["masked", "all"])
    num_tokentypes: Optional[int] = _f(None, "Token-type table size; default 2 for BERT, 0 for GPT.")


@dataclass
class LoggingFlags:
    save: Optional[str] = _f(None, "Checkpoint directory to save to.")
    load: Optional[str] = _f(None, "Checkpoint directory to resume from.")
    save_interval: Optional[int] = _f(None, "Save every N iterations (and at the end).")
    no_load_optim: bool = _f(False, "Do not restore optimizer state.")
    no_load_rng: bool = _f(False, "Do not restore RNG state.")
    finetune: bool = _f(False, "Load model weights only and start at iteration 0.")
    eval_interval: int = _f(1000, "Evaluate on the validation split every N iterations.")
    eval_iters: int = _f(10, "Validation micro-batches per evaluation (0 = no evaluation).")
    log_interval: int = _f(100, "Print a log line every N iterations.")
    tensorboard_dir: Optional[str] = _f(None, "TensorBoard log directory.")
    exit_interval: Optional[int] = _f(None, "Stop after this iteration (testing interruptions).")


FLAG_GROUPS = (ModelFlags, DSLMFlags, ParallelFlags, TrainingFlags, DataFlags, LoggingFlags)


def _parse_bool_default_type(tp):
    """Resolve the dataclass annotation (a string under PEP 563) to an argparse type."""
    text = tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp))
    for name, conv in (("float", float), ("int", int), ("str", str)):
        if name in text:
            return conv
    return str


def add_flag_group(parser: argparse.ArgumentParser, group_cls) -> None:
    """Add one dataclass's fields as ``--field-name`` flags (bools become store_true)."""
    group = parser.add_argument_group(group_cls.__name__.replace("Flags", "").lower())
    for f in dataclasses.fields(group_cls):
        flag = "--" + f.name.replace("_", "-")
        meta = dict(f.metadata)
        help_text = meta.pop("help", "").replace("%", "%%")  # argparse %-formats help strings
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if f.type in ("bool", bool):
            group.add_argument(flag, action="store_true", default=default, help=help_text)
            continue
        conv = _parse_bool_default_type(f.type)
        group.add_argument(flag, type=conv, default=default, help=help_text, **meta)


def build_parser(extra_args_provider=None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Megatron-style training on megatron-core with DeepScaleLM",
                                     allow_abbrev=False)
    for group_cls in FLAG_GROUPS:
        add_flag_group(parser, group_cls)
    if extra_args_provider is not None:
        parser = extra_args_provider(parser) or parser
    return parser
