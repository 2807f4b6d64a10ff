"""Command-line configuration as grouped dataclasses: each field is one upstream-named flag, its help the `--help`.

Flags keep upstream Megatron-LM names (``--num-layers`` ...), so existing launch scripts work. The method's
flags (sizes, dropout, init scheme, residual scaling, r0) are declared once in ``megatron.dslm.config`` and
added to their sections here. The parsed values land in one flat ``argparse.Namespace`` (what entry scripts
and upstream users expect); library code receives plain values, never the namespace.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import List, Optional

from megatron.dslm import config as dslm_config


def _f(default, help: str, **meta):
    """A dataclass field carrying its --help text (and optional argparse extras such as nargs/choices)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class ModelFlags:
    """Model flags beyond the method's (those come from ``megatron.dslm.config.DSLMConfig``)."""

    max_position_embeddings: Optional[int] = _f(None, "Size of the position table; default seq length.")
    make_vocab_size_divisible_by: int = _f(128, "Pad the vocabulary to a multiple of this times TP size.")
    untie_embeddings_and_output_weights: bool = _f(False, "Untie embeddings and output weights (GPT): a separate "
                                                   "output layer, initialised with the scheme's output-layer std.")
    # Today's decoder shape (upstream names and meanings; megatron-core's own modules implement each).
    normalization: str = _f("LayerNorm", "Which normalization technique to use (megatron-core's torch "
                            "LayerNorm / RMSNorm).", choices=["LayerNorm", "RMSNorm"])
    norm_epsilon: float = _f(1e-5, "Epsilon for layer norm and RMS norm.")
    apply_layernorm_1p: bool = _f(False, "Adjust LayerNorm weights such that they are centered around zero "
                                  "(the norm computes (1 + weight) * x_hat; weights start at 0). This improves "
                                  "numerical stability.")
    swiglu: bool = _f(False, "Use gated linear units and SiLU activation instead of default gelu; "
                      "--ffn-hidden-size then defaults to 2/3 of 4 * hidden size, rounded down to a multiple of 64.")
    openai_gelu: bool = _f(False, "Use OpenAI's GeLU implementation (the tanh approximation; GPT-2's "
                           "'gelu_new'). This option should not be used unless for backward compatibility reasons.")
    position_embedding_type: str = _f("learned_absolute", "Position embedding type: a learned table, rotary "
                                      "(rope, no table) or none.", choices=["learned_absolute", "rope", "none"])
    rotary_base: int = _f(10000, "Base to use for rotary positional embeddings, default 10000.")
    rotary_percent: float = _f(1.0, "Percent of rotary dimension to use, default 100%.")
    rotary_seq_len_interpolation_factor: Optional[int] = _f(None, "Sequence length interpolation factor for "
                                                            "rotary embeddings.")
    group_query_attention: bool = _f(False, "Use group-query attention (--num-query-groups key/value heads).")
    num_query_groups: int = _f(1, "Number of query groups (key/value heads) with --group-query-attention.")
    add_bias_linear: bool = _f(True, "Disable bias in the linear layers.", flag="--disable-bias-linear")
    qk_layernorm: bool = _f(False, "Whether to layer normalize the q and k attention embeddings (per head, "
                            "with --normalization).")
    attention_backend: str = _f("auto", "Attention core: 'local' (megatron-core's unfused), 'sdpa' "
                                "(torch scaled_dot_product_attention), 'auto' (the fastest available). Upstream's "
                                "values: 'unfused' runs 'local', 'flash' runs 'sdpa' (torch's FlashAttention "
                                "kernels on CUDA in fp16/bf16), 'fused' (cuDNN through Transformer Engine) is "
                                "refused at start-up.",
                                choices=["auto", "local", "sdpa", "flash", "fused", "unfused"])
    use_flash_attn: bool = _f(False, "use FlashAttention implementation of attention (upstream's older spelling "
                              "of --attention-backend flash).")
    attention_softmax_in_fp32: bool = _f(False, "Run attention masking and softmax in fp32 (megatron-core's "
                                         "local core attention under fp16/bf16).")
    transformer_impl: str = _f("local", "Transformer implementation: 'local' (megatron-core's modules; the only "
                               "one here, so the default, where upstream's is transformer_engine). "
                               "'transformer_engine' and 'inference_optimized' are refused at start-up with the "
                               "reason.", choices=["local", "transformer_engine", "inference_optimized"])
    linear_impl: str = _f("torch", "TP linears: 'torch' (F.linear with the bias folded in wherever the layer "
                          "has nothing to communicate, i.e. TP=1 without sequence parallelism or fused grad "
                          "accumulation; megatron-core's own path otherwise) or 'megatron' (always "
                          "megatron-core's autograd Function, bit-for-bit stock).", choices=["torch", "megatron"])


@dataclass
class DSLMFlags:
    """Moment logging; the method's own flags come from ``DSLMConfig``."""

    log_moments_interval: int = _f(0, "Every N iterations record per-layer moments (0 = never), "
                                   "from iteration 0: the init profile, the first batch before any update.")
    moments_file: Optional[str] = _f(None, "JSONL for moment records; default <tensorboard-dir or save>/moments.jsonl.")


@dataclass
class ParallelFlags:
    tensor_model_parallel_size: int = _f(1, "Tensor-parallel size.")
    pipeline_model_parallel_size: int = _f(1, "Pipeline-parallel size.")
    num_layers_per_virtual_pipeline_stage: Optional[int] = _f(
        None, "Interleaved pipeline: transformer layers per virtual stage (model chunk); each pipeline rank then "
        "holds (num-layers / PP) / N chunks. Needs PP >= 2 and micro-batches divisible by PP.")
    num_virtual_stages_per_pipeline_rank: Optional[int] = _f(
        None, "Interleaved pipeline: model chunks (virtual stages) per pipeline rank; the alternative to "
        "--num-layers-per-virtual-pipeline-stage. Bubble (PP-1)/(V*m + PP-1) for m micro-batches instead of "
        "(PP-1)/(m + PP-1).")
    use_distributed_optimizer: bool = _f(False, "Shard optimizer state across data-parallel ranks.")
    grad_buffer_impl: str = _f("direct", "Gradients in megatron-core DDP's grad buffer: 'direct' (each param.grad "
                               "is a view of the buffer, so autograd accumulates there without megatron's "
                               "per-parameter hooks, and the grad norm/clip is one op on the buffer; used only "
                               "where exact: fp32 grads in an fp32 buffer, no overlapped reduction, TP=PP=1 for "
                               "the norm) or 'megatron' (always megatron-core's hooks and list-based norm).",
                               choices=["direct", "megatron"])
    sequence_parallel: bool = _f(False, "Enable sequence parallel optimization: LayerNorm, dropout and residual "
                                 "regions hold [s/TP, b, h] slices (all-gather / reduce-scatter around the TP "
                                 "linears instead of all-reduce). Needs TP >= 2; turned off with a warning at TP=1.")
    overlap_grad_reduce: bool = _f(False, "If set, overlap DDP grad reduce (bucketed all-reduce / reduce-scatter "
                                   "started during backward).")
    overlap_param_gather: bool = _f(False, "If set, overlap param all-gather in distributed optimizer (needs "
                                    "--use-distributed-optimizer).")
    ddp_bucket_size: Optional[int] = _f(None, "Bucket size for data-parallel communication (elements; default "
                                        "max(40M, 1M x DP size); used only with --overlap-grad-reduce).")
    ddp_average_in_collective: bool = _f(False, "If set, average directly in data-parallel communication "
                                         "collective.")
    cpu: bool = _f(False, "Force CPU mode (gloo) even when CUDA is available.")
    distributed_backend: str = _f("nccl", "Which backend to use for distributed training: nccl on GPUs (CPU mode "
                                  "always runs gloo); gloo needs CPU mode (--cpu or no GPU).",
                                  choices=["nccl", "gloo"])
    distributed_timeout_minutes: int = _f(10, "Timeout of collective operations.")


@dataclass
class TrainingFlags:
    micro_batch_size: Optional[int] = _f(None, "Samples per micro-batch per data-parallel rank.")
    global_batch_size: Optional[int] = _f(None, "Samples per optimizer step; default micro x DP.")
    train_iters: Optional[int] = _f(None, "Number of optimizer steps (or give --train-samples).")
    train_samples: Optional[int] = _f(None, "Total number of samples to train over all training runs; sets "
                                      "--train-iters to train-samples // global batch size. Use this or "
                                      "--train-iters.")
    lr: Optional[float] = _f(None, "Peak learning rate.")
    min_lr: float = _f(0.0, "Learning rate floor of the decay.")
    lr_decay_style: str = _f("linear", "Decay after warmup.", choices=["constant", "linear", "cosine",
                                                                      "inverse-square-root"])
    lr_decay_iters: Optional[int] = _f(None, "Steps over which to decay; default --train-iters.")
    lr_decay_samples: Optional[int] = _f(None, "Samples over which to decay the learning rate (sample-based "
                                         "training); default --train-samples.")
    lr_warmup_fraction: Optional[float] = _f(None, "Warmup as a fraction of the decay steps (or samples).")
    lr_warmup_iters: int = _f(0, "Warmup steps (use this or --lr-warmup-fraction).")
    lr_warmup_samples: int = _f(0, "Samples to warm the learning rate up over linearly (sample-based training).")
    lr_warmup_init: float = _f(0.0, "Initial value for learning rate warmup. The scheduler starts warmup from "
                               "this value.")
    optimizer: str = _f("adam", "Optimizer function: adam (AdamW, decoupled weight decay) or sgd (with "
                        "--sgd-momentum); upstream's muon/lion/soap are refused at start-up.",
                        choices=["adam", "sgd", "muon", "dist_muon", "lion", "soap", "adaptive_muon"])
    sgd_momentum: float = _f(0.9, "Momentum factor for sgd.")
    weight_decay: float = _f(0.01, "Decoupled weight decay (AdamW).")
    clip_grad: float = _f(1.0, "Clip the global gradient norm to this (0 = off).")
    check_for_nan_in_loss_and_grad: bool = _f(
        True, "Do not stop at a non-finite loss or grad norm. By default such an iteration ends the run with an "
        "error (exit status 3) before any checkpoint of it is written; with fp16 dynamic loss scaling an "
        "overflowing grad is a skipped step, not an error.", flag="--no-check-for-nan-in-loss-and-grad")
    adam_beta1: float = _f(0.9, "Adam beta1.")
    adam_beta2: float = _f(0.999, "Adam beta2.")
    adam_eps: float = _f(1e-8, "Adam epsilon.")
    seed: int = _f(1234, "Random seed (weights, data order, dropout).")
    bf16: bool = _f(False, "bf16 mixed precision (GPU).")
    fp16: bool = _f(False, "fp16 mixed precision with dynamic loss scaling (GPU).")
    loss_scale: Optional[float] = _f(None, "Static fp16 loss scale; default dynamic.")
    initial_loss_scale: float = _f(2.0 ** 32, "Initial dynamic loss scale.")
    use_cpu_initialization: bool = _f(False, "Build weights on CPU (the init tables give layout-independent "
                                      "values anyway).")
    recompute_activations: bool = _f(False, "Selective recompute: recompute each layer's core attention in "
                                     "backward (same as --recompute-granularity selective).")
    recompute_granularity: Optional[str] = _f(
        None, "Activation recompute in backward: 'full' (whole transformer layers; needs --recompute-method "
        "and --recompute-num-layers) or 'selective' (the core attention of every layer). Default: none.",
        choices=["full", "selective"])
    recompute_method: Optional[str] = _f(
        None, "Full recompute only: 'uniform' (split each stage's layers into chunks of --recompute-num-layers "
        "and recompute each chunk from its input) or 'block' (recompute the first --recompute-num-layers layers "
        "of each pipeline stage, keep the rest).", choices=["uniform", "block"])
    recompute_num_layers: Optional[int] = _f(
        None, "Full recompute only: layers per recomputed chunk (uniform) or recomputed layers per pipeline "
        "stage (block).")
    # megatron-core's fusions: on by default where they can run (CUDA, and the kernel importable where one is
    # needed); off in CPU mode. A fusion that cannot run is turned off with one line at start-up.
    bias_gelu_fusion: bool = _f(True, "Disable megatron-core's fused bias + GeLU (torch-compiled; it uses the "
                                "tanh approximation of GeLU, as upstream).", flag="--no-bias-gelu-fusion")
    bias_dropout_fusion: bool = _f(True, "Disable the fused bias + dropout + residual add (megatron-core's, and "
                                   "DSLM's λ/β merge).", flag="--no-bias-dropout-fusion")
    masked_softmax_fusion: bool = _f(True, "Disable megatron's fused scale + mask + softmax kernels (apex "
                                     "scaled_*softmax_cuda; read by --attention-backend local only).",
                                     flag="--no-masked-softmax-fusion")
    gradient_accumulation_fusion: bool = _f(True, "Disable fusing the weight-gradient GEMM with the accumulation "
                                            "into the fp32 grad buffer (apex fused_weight_gradient_mlp_cuda).",
                                            flag="--no-gradient-accumulation-fusion")
    persist_layer_norm: bool = _f(True, "Disable apex's persistent LayerNorm kernel (FastLayerNorm; megatron-core "
                                  "uses it at the hidden sizes it supports).", flag="--no-persist-layer-norm")


@dataclass
class DataFlags:
    data_path: List[str] = _f([], "Indexed dataset prefixes, optionally weighted: '0.7 a 0.3 b'.", nargs="*")
    split: str = _f("969,30,1", "Train/valid/test split of --data-path documents (quotes around it, as some "
                    "launch scripts pass them, are ignored).")
    mock_data: bool = _f(False, "Synthetic random token ids (smoke tests; breaks DSLM's correlation premise).")
    tokenizer_type: Optional[str] = _f(None, "What type of tokenizer to use (upstream's names). Default: the "
                                       "entry script's (pretrain_gpt.py GPT2BPETokenizer, pretrain_bert.py "
                                       "BertWordPieceLowerCase); NullTokenizer with --mock-data and no vocabulary "
                                       "file.")
    vocab_file: Optional[str] = _f(None, "vocab.txt (WordPiece) or vocab.json (GPT-2 BPE).")
    merge_file: Optional[str] = _f(None, "merges.txt (GPT-2 BPE).")
    tokenizer_model: Optional[str] = _f(None, "tokenizer.json or its directory (HuggingFaceTokenizer).")
    data_cache_path: Optional[str] = _f(None, "Where megatron-core caches dataset indices.")
    num_workers: int = _f(2, "Dataloader number of workers (upstream's default 2; 0 loads in the training "
                          "process).")
    mask_prob: float = _f(0.15, "BERT: probability of masking a token.")
    short_seq_prob: float = _f(0.1, "BERT: probability of a shorter sample.")
    bert_no_binary_head: bool = _f(False, "BERT: drop the sentence-order/next-sentence head.")
    mlm_head_positions: str = _f("masked", "BERT: run the masked-LM head and vocabulary projection on the "
                                 "'masked' (loss) positions only, or on 'all' tokens (stock megatron-core). "
                                 "Same loss; 'masked' skips ~85% of the largest matmul.",
                                 choices=["masked", "all"])


@dataclass
class LoggingFlags:
    save: Optional[str] = _f(None, "Checkpoint directory to save to.")
    load: Optional[str] = _f(None, "Checkpoint directory to resume from.")
    save_interval: Optional[int] = _f(None, "Save every N iterations (and at the end).")
    no_load_optim: bool = _f(False, "Do not restore optimizer state.")
    no_load_rng: bool = _f(False, "Do not restore RNG state.")
    finetune: bool = _f(False, "Load model weights only and start at iteration 0.")
    save_keep_last: Optional[int] = _f(None, "Keep only the N newest checkpoints under --save: after each save the "
                                       "older ones are removed (never the one the tracker names, one still being "
                                       "written, or ones newer than the tracker). Default: keep every checkpoint.")
    ckpt_fallback_to_verified: bool = _f(False, "When the checkpoint the tracker names under --load is damaged (a "
                                         "file differs from its checksums.json or is missing, .metadata is missing, "
                                         "common.pt does not load), load the newest older checkpoint that verifies, "
                                         "with a warning line. Without it, a damaged checkpoint stops the run with "
                                         "one error line, exit 2.")
    eval_interval: int = _f(1000, "Evaluate on the validation split every N iterations.")
    eval_iters: int = _f(100, "Validation micro-batches per evaluation (0 = no evaluation); upstream's "
                         "default 100.")
    skip_train: bool = _f(False, "If set, bypass the training loop, perform evaluation for validation and exit.")
    log_interval: int = _f(100, "Print a log line every N iterations.")
    tensorboard_dir: Optional[str] = _f(None, "TensorBoard log directory.")
    metrics_file: Optional[str] = _f(None, "JSONL metrics, one line per log interval and per evaluation "
                                     "(appended on resume); default <tensorboard-dir>/metrics.jsonl, else "
                                     "<save>/metrics.jsonl, else none.")
    exit_interval: Optional[int] = _f(None, "Stop after this iteration (testing interruptions).")
    exit_duration_in_mins: Optional[int] = _f(None, "Exit the program after this many minutes (checked after "
                                              "every iteration, agreed by all ranks; saves first with --save).")
    exit_signal_handler: bool = _f(False, "Dynamically save the checkpoint and shutdown the training if signal "
                                   "is received (checked after every iteration, agreed by all ranks; no final "
                                   "evaluation).")
    exit_signal: str = _f("SIGTERM", "Signal for --exit-signal-handler.",
                          choices=["SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2"])
    override_opt_param_scheduler: bool = _f(False, "Reset the values of the scheduler (learning rate, warmup "
                                            "iterations, minimum learning rate, maximum number of iterations, and "
                                            "decay style) from input arguments and ignore values from checkpoints.",
                                            flag="--override-opt_param-scheduler",
                                            aliases=("--override-opt-param-scheduler",))
    use_checkpoint_opt_param_scheduler: bool = _f(False, "Use checkpoint to set the values of the scheduler "
                                                  "(learning rate, warmup iterations, minimum learning rate, maximum "
                                                  "number of iterations, and decay style) from checkpoint and ignore "
                                                  "input arguments.", flag="--use-checkpoint-opt_param-scheduler",
                                                  aliases=("--use-checkpoint-opt-param-scheduler",))
    log_throughput: bool = _f(False, "If set, calculate and log throughput per GPU (model TFLOP/s per device "
                              "from the analytic FLOP count, with the tokens/s already printed).")
    tensorboard_log_interval: int = _f(1, "Report to tensorboard interval.")
    log_timers_to_tensorboard: bool = _f(False, "If set, write timers to tensorboard (iteration-time).")
    log_validation_ppl_to_tensorboard: bool = _f(False, "If set, write validation perplexity to tensorboard.")
    wandb_project: Optional[str] = _f(None, "The wandb project name (needs the optional wandb package; "
                                      "WANDB_MODE=offline works without a network). Ignore wandb by default.")
    wandb_exp_name: Optional[str] = _f(None, "The wandb experiment name.")
    wandb_save_dir: Optional[str] = _f(None, "Path to save the wandb results locally; default "
                                       "<save>/wandb.")
    ckpt_format: str = _f("torch_dist", "Checkpoint format: torch_dist (megatron-core's distributed checkpoint, "
                          "the only one written here); the others are refused at start-up.",
                          choices=["torch", "torch_dist", "torch_dcp", "fsdp_dtensor"])
    dry_run: bool = _f(False, "Parse and validate the flags against WORLD_SIZE (default TP x PP), print the "
                       "resolved configuration (model shape, parallel layout, schedule, init scheme and "
                       "lambda/beta, parameters per pipeline stage, pipeline bubble) and exit 0 without building "
                       "a model, starting process groups or reading data.")


FLAG_GROUPS = (ModelFlags, DSLMFlags, ParallelFlags, TrainingFlags, DataFlags, LoggingFlags)
# DSLMConfig fields training takes (the model type comes from the entry script, not a flag).
DSLM_TRAINING_FIELDS = tuple(name for name in dslm_config.FIELDS if name != "model_type")


def _parse_bool_default_type(tp):
    """Resolve the dataclass annotation (a string under PEP 563) to an argparse type."""
    text = tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp))
    for name, conv in (("float", float), ("int", int), ("str", str)):
        if name in text:
            return conv
    return str


def add_flag_group(parser: argparse.ArgumentParser, group_cls) -> None:
    """Add one dataclass's fields as ``--field-name`` flags (bools become store_true), after the method's
    ``DSLMConfig`` flags of the same --help section."""
    title = group_cls.__name__.replace("Flags", "").lower()
    group = parser.add_argument_group(title)
    dslm_config.add_arguments(group, [n for n in dslm_config.fields_in_group(title) if n in DSLM_TRAINING_FIELDS])
    for f in dataclasses.fields(group_cls):
        meta = dict(f.metadata)
        flag = meta.pop("flag", "--" + f.name.replace("_", "-"))
        flags = (flag, *meta.pop("aliases", ()))
        help_text = meta.pop("help", "").replace("%", "%%")  # argparse %-formats help strings
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if f.type in ("bool", bool):
            # A field that defaults to True is an upstream ``--no-*`` flag that stores False in the field.
            group.add_argument(*flags, dest=f.name, action="store_false" if default else "store_true",
                               default=default, help=help_text)
            continue
        conv = _parse_bool_default_type(f.type)
        group.add_argument(*flags, type=conv, default=default, help=help_text, **meta)


class MegatronArgumentParser(argparse.ArgumentParser):
    """Knows every upstream Megatron-LM flag: the ones not defined here stop the parse with one line naming each
    and why (``megatron.training.upstream_flags``), exit status 2, instead of argparse's generic error."""

    def parse_known_args(self, args=None, namespace=None):
        from megatron.training.upstream_flags import check_refused

        namespace, extras = super().parse_known_args(args, namespace)
        check_refused(self, namespace)
        return namespace, extras


def build_parser(extra_args_provider=None) -> argparse.ArgumentParser:
    from megatron.training.upstream_flags import add_upstream_flags

    parser = MegatronArgumentParser(description="Megatron-style training on megatron-core with DeepScaleLM",
                                    allow_abbrev=False)
    for group_cls in FLAG_GROUPS:
        add_flag_group(parser, group_cls)
    if extra_args_provider is not None:
        parser = extra_args_provider(parser) or parser
    add_upstream_flags(parser)  # last: whatever is defined by now is honoured, the rest refused by name
    return parser
