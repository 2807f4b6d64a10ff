"""Startup validation: every inconsistent configuration fails here with one clear message, before any work."""

from __future__ import annotations

import os


class ConfigError(ValueError):
    """A user-facing configuration error; entry points print it and exit with status 2."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def validate_args(args, world_size: int) -> None:
    """Check and complete ``args`` in place (derived sizes, defaults that depend on other flags)."""
    for name in ("num_layers", "hidden_size", "num_attention_heads", "seq_length", "micro_batch_size"):
        _require(getattr(args, name) is not None, f"--{name.replace('_', '-')} is required")
    if getattr(args, "train_samples", None) is None:
        _require(args.train_iters is not None, "--train-iters (or --train-samples) is required")
    for name in ("num_layers", "hidden_size", "num_attention_heads", "seq_length", "micro_batch_size",
                 "tensor_model_parallel_size", "pipeline_model_parallel_size"):
        _require(getattr(args, name) > 0, f"--{name.replace('_', '-')} must be positive")
    _require(args.train_iters is None or args.train_iters >= 0, "--train-iters must be >= 0")

    tp, pp = args.tensor_model_parallel_size, args.pipeline_model_parallel_size
    _require(world_size % (tp * pp) == 0,
             f"world size {world_size} is not divisible by TP ({tp}) x PP ({pp})")
    args.world_size = world_size
    args.data_parallel_size = world_size // (tp * pp)
    _require(args.num_layers % pp == 0,
             f"--num-layers {args.num_layers} is not divisible by --pipeline-model-parallel-size {pp}")
    _require(args.hidden_size % args.num_attention_heads == 0,
             f"--hidden-size {args.hidden_size} is not divisible by --num-attention-heads {args.num_attention_heads}")
    _require(args.num_attention_heads % tp == 0,
             f"--num-attention-heads {args.num_attention_heads} is not divisible by TP size {tp}")
    validate_decoder_shape_flags(args)
    args.ffn_hidden_size = args.ffn_hidden_size or 4 * args.hidden_size
    _require(args.ffn_hidden_size % tp == 0, f"--ffn-hidden-size {args.ffn_hidden_size} not divisible by TP {tp}")
    args.kv_channels = args.kv_channels or args.hidden_size // args.num_attention_heads
    args.max_position_embeddings = args.max_position_embeddings or args.seq_length
    _require(args.seq_length <= args.max_position_embeddings,
             f"--seq-length {args.seq_length} exceeds --max-position-embeddings {args.max_position_embeddings}")

    # Batch sizes: global = micro x DP x number of micro-batches.
    dp_batch = args.micro_batch_size * args.data_parallel_size
    if args.global_batch_size is None:
        args.global_batch_size = dp_batch
    _require(args.global_batch_size % dp_batch == 0,
             f"--global-batch-size {args.global_batch_size} is not divisible by --micro-batch-size "
             f"{args.micro_batch_size} x data-parallel size {args.data_parallel_size}")
    args.num_microbatches = args.global_batch_size // dp_batch
    validate_schedule_flags(args)
    validate_virtual_pipeline_flags(args)
    validate_recompute_flags(args)
    validate_parallel_flags(args)

    # Optimisation.
    _require(args.lr is not None or args.train_iters == 0, "--lr is required")
    _require(not (args.fp16 and args.bf16), "--fp16 and --bf16 are mutually exclusive")
    _require(args.lr_warmup_fraction is None or args.lr_warmup_iters == 0,
             "use either --lr-warmup-fraction or --lr-warmup-iters, not both")
    args.lr_decay_iters = args.lr_decay_iters or args.train_iters
    if args.lr_warmup_fraction is not None:
        _require(0.0 <= args.lr_warmup_fraction <= 1.0, "--lr-warmup-fraction must be in [0, 1]")
        args.lr_warmup_steps = int(args.lr_warmup_fraction * args.lr_decay_iters)
    else:
        args.lr_warmup_steps = args.lr_warmup_iters

    check_method_flags(args)  # sizes checked above; dropout, scheme and residual scaling by the registry

    # Data.
    _require(args.mock_data or args.data_path or getattr(args, "data_optional", False),
             "give --data-path PREFIX (an indexed dataset from tools/preprocess_data.py) or --mock-data")
    if args.tokenizer_type is None:  # upstream's pretrain_gpt.py default; mock data needs no vocabulary
        args.tokenizer_type = "NullTokenizer" if args.mock_data else "GPT2BPETokenizer"
    dry_run = getattr(args, "dry_run", False)  # checks the flags only: no file is opened
    if args.tokenizer_type == "NullTokenizer":
        _require(args.vocab_size is not None, "--tokenizer-type NullTokenizer needs --vocab-size")
    for name in ("vocab_file", "merge_file", "tokenizer_model"):
        path = getattr(args, name)
        _require(path is None or dry_run or os.path.exists(path),
                 f"--{name.replace('_', '-')} {path} does not exist")
    if not args.mock_data and not dry_run:
        for prefix in data_prefixes(args.data_path):
            for ext in (".bin", ".idx"):
                _require(os.path.exists(prefix + ext),
                         f"--data-path {prefix}: {prefix + ext} not found (run tools/preprocess_data.py)")
    args.split = args.split.strip().strip("'\"").strip()  # launch scripts that pass --split "'99,1,0'"
    _require(len(args.split.split(",")) in (1, 2, 3) and all(s.strip().replace(".", "", 1).isdigit()
                                                            for s in args.split.split(",")),
             f"--split {args.split!r} must look like '969,30,1'")
    if args.num_tokentypes is None:
        args.num_tokentypes = 0

    # Checkpoints and logging.
    _require(args.log_interval > 0, "--log-interval must be positive")
    _require(args.eval_interval > 0, "--eval-interval must be positive")
    _require(args.log_moments_interval >= 0, "--log-moments-interval must be >= 0")
    if args.save_interval is not None:
        _require(args.save is not None, "--save-interval needs --save")
        _require(args.save_interval > 0, "--save-interval must be positive")
    if args.load is not None and os.path.exists(args.load) and not os.path.isdir(args.load):
        raise ConfigError(f"--load {args.load} is not a directory")
    validate_checkpoint_policy(args)
    validate_upstream_values(args)


def validate_checkpoint_policy(args) -> None:
    """--save-keep-last and --ckpt-fallback-to-verified: each needs its folder, and together they must leave an
    older checkpoint to fall back to."""
    keep = getattr(args, "save_keep_last", None)
    if keep is not None:
        _require(args.save is not None, "--save-keep-last needs --save")
        _require(keep >= 1, f"--save-keep-last must be >= 1 (got {keep})")
    if getattr(args, "ckpt_fallback_to_verified", False):
        _require(args.load is not None, "--ckpt-fallback-to-verified needs --load")
        same = args.save is not None and os.path.abspath(args.save) == os.path.abspath(args.load)
        _require(not (same and keep == 1),
                 "--ckpt-fallback-to-verified with --save-keep-last 1 on the folder it loads from: every older "
                 "checkpoint is removed after each save, so there is never one to fall back to; keep 2 or more")


def check_method_flags(args) -> None:
    """Init scheme, residual lambda^2 + beta^2 = 1, knobs the scheme ignores: the scheme registry decides.

    The registry is the only validator of the method's settings (the CLIs call it too); its ValueError
    becomes one ConfigError line naming the flag.
    """
    from megatron.dslm.config import explicit_fields, model_arch
    from megatron.dslm.schemes.registry import check_config

    try:
        check_config(args.init_scheme, model_arch(args), explicit_fields(args))
    except ValueError as err:
        raise ConfigError(str(err)) from None


def validate_decoder_shape_flags(args) -> None:
    """RMSNorm, SwiGLU, RoPE, GQA, bias-free linears, qk-LayerNorm (upstream meanings and defaults).

    Sizes --ffn-hidden-size as upstream does under --swiglu (2/3 of 4h, a multiple of 64) when it is unset;
    --num-query-groups counts only with --group-query-attention (else every head has its own key/value).
    """
    h, heads, tp = args.hidden_size, args.num_attention_heads, args.tensor_model_parallel_size
    if getattr(args, "swiglu", False):
        from megatron.dslm.config import explicit_fields

        _require("activation" not in explicit_fields(args),
                 f"--swiglu sets the FFN activation (SiLU gate x linear); drop --activation {args.activation}")
        if not args.ffn_hidden_size:
            args.ffn_hidden_size = max(64, int(4 * h * 2 / 3) // 64 * 64)
    if getattr(args, "openai_gelu", False):
        _require(not getattr(args, "swiglu", False) and args.activation == "gelu",
                 "--openai-gelu replaces the GeLU; it does not combine with --swiglu or --activation "
                 f"{args.activation}")
    if getattr(args, "group_query_attention", False):
        groups = args.num_query_groups
        _require(groups > 0, f"--num-query-groups must be positive, got {groups}")
        _require(heads % groups == 0,
                 f"--num-attention-heads {heads} is not divisible by --num-query-groups {groups}")
        _require(groups % tp == 0, f"--num-query-groups {groups} is not divisible by TP size {tp} "
                 "(tensor parallelism splits whole key/value groups)")
    rope = getattr(args, "position_embedding_type", "learned_absolute") == "rope"
    _require(getattr(args, "rotary_base", 10000) > 0, "--rotary-base must be positive")
    percent = getattr(args, "rotary_percent", 1.0)
    _require(0.0 < percent <= 1.0, f"--rotary-percent must be in (0, 1], got {percent}")
    if rope:
        head_dim = args.kv_channels or h // heads
        rotary_dim = int(head_dim * percent)
        _require(rotary_dim >= 2 and rotary_dim % 2 == 0,
                 f"--rotary-percent {percent} of the head size {head_dim} gives {rotary_dim} rotary channels: "
                 "rotary embeddings rotate channel pairs, so it must be an even number >= 2")
    factor = getattr(args, "rotary_seq_len_interpolation_factor", None)
    _require(factor is None or factor >= 1, f"--rotary-seq-len-interpolation-factor must be >= 1, got {factor}")
    _require(getattr(args, "norm_epsilon", 1e-5) > 0, "--norm-epsilon must be positive")


def validate_virtual_pipeline_flags(args) -> None:
    """Interleaved pipeline (upstream meanings): sets ``args.virtual_pipeline_model_parallel_size`` (None: off).

    Either flag gives the number of model chunks per pipeline rank; one chunk per rank is the plain schedule.
    megatron-core's interleaved schedule runs micro-batches in groups of PP, so their number must divide by PP.
    """
    per_layer = getattr(args, "num_layers_per_virtual_pipeline_stage", None)
    per_rank = getattr(args, "num_virtual_stages_per_pipeline_rank", None)
    args.virtual_pipeline_model_parallel_size = None
    if per_layer is None and per_rank is None:
        return
    _require(per_layer is None or per_rank is None, "give either --num-layers-per-virtual-pipeline-stage or "
             "--num-virtual-stages-per-pipeline-rank, not both")
    pp = args.pipeline_model_parallel_size
    flag = ("--num-layers-per-virtual-pipeline-stage" if per_layer is not None
            else "--num-virtual-stages-per-pipeline-rank")
    value = per_layer if per_layer is not None else per_rank
    _require(value > 0, f"{flag} must be positive")
    _require(pp >= 2, f"{flag} (interleaved pipeline) needs --pipeline-model-parallel-size >= 2, got {pp}")
    per_stage = args.num_layers // pp
    if per_layer is not None:
        _require(per_stage % per_layer == 0, f"--num-layers-per-virtual-pipeline-stage {per_layer} does not divide "
                 f"the {per_stage} layers of a pipeline stage (--num-layers {args.num_layers} / PP {pp})")
        vp = per_stage // per_layer
    else:
        _require(per_stage % per_rank == 0, f"--num-virtual-stages-per-pipeline-rank {per_rank} does not divide "
                 f"the {per_stage} layers of a pipeline stage (--num-layers {args.num_layers} / PP {pp})")
        vp = per_rank
    if vp == 1:
        return  # one chunk per rank: the plain 1F1B schedule
    m = args.num_microbatches
    _require(m % pp == 0, f"the interleaved pipeline needs the number of micro-batches ({m} = --global-batch-size "
             f"{args.global_batch_size} / (--micro-batch-size {args.micro_batch_size} x DP "
             f"{args.data_parallel_size})) to be a multiple of --pipeline-model-parallel-size {pp}")
    args.virtual_pipeline_model_parallel_size = vp


def pipeline_bubble_fraction(pp: int, num_microbatches: int, vp=None) -> float:
    """Idle fraction of a pipeline step: (p-1)/(v·m + p-1) interleaved, (p-1)/(m + p-1) without."""
    return (pp - 1) / ((vp or 1) * num_microbatches + pp - 1)


def validate_recompute_flags(args) -> None:
    """Upstream meanings: --recompute-activations = selective; full needs a method and a layer count."""
    if args.recompute_activations:
        _require(args.recompute_granularity in (None, "selective"),
                 "--recompute-activations means --recompute-granularity selective; it conflicts with "
                 f"--recompute-granularity {args.recompute_granularity}")
        args.recompute_granularity = "selective"
    granularity, method, n = args.recompute_granularity, args.recompute_method, args.recompute_num_layers
    if granularity != "full":
        for flag, value in (("--recompute-method", method), ("--recompute-num-layers", n)):
            _require(value is None, f"{flag} applies to --recompute-granularity full only"
                     + (" (selective recomputes every layer's core attention)" if granularity else ""))
        return
    # megatron-core recomputes per TransformerBlock: under the interleaved pipeline, one model chunk's layers
    per_stage = (args.num_layers // args.pipeline_model_parallel_size
                 // (getattr(args, "virtual_pipeline_model_parallel_size", None) or 1))
    _require(method is not None, "--recompute-granularity full needs --recompute-method uniform or block")
    _require(n is not None, f"--recompute-granularity full needs --recompute-num-layers (1..{per_stage}, "
             "the layers of one pipeline stage)")
    _require(1 <= n <= per_stage, f"--recompute-num-layers {n} must be between 1 and the {per_stage} layers "
             "of a pipeline stage")
    _require(method == "block" or per_stage % n == 0,
             f"--recompute-method uniform: --recompute-num-layers {n} must divide the {per_stage} layers of a "
             "pipeline stage")


def validate_parallel_flags(args) -> None:
    """Upstream meanings: sequence parallelism needs TP >= 2 (else off, with a warning); overlapped param
    gather needs the distributed optimizer and overlapped grad reduce."""
    if args.tensor_model_parallel_size == 1 and getattr(args, "sequence_parallel", False):
        if int(os.environ.get("RANK", "0")) == 0:
            print("WARNING: disabling sequence parallelism because tensor model parallelism is disabled",
                  flush=True)
        args.sequence_parallel = False
    if getattr(args, "sequence_parallel", False):
        from megatron.perf.cpu_compat import cpu_mode_wanted

        if not cpu_mode_wanted(args.cpu):  # CPU mode marks megatron-core's torch LayerNorm (cpu_compat)
            from megatron.core.models.gpt.gpt_layer_specs import HAVE_APEX  # the local specs' LayerNorm

            _require(HAVE_APEX, "--sequence-parallel on GPUs needs apex (the local layer specs' FusedLayerNorm): "
                     "megatron-core's torch LayerNorm does not support sequence parallelism")
    if getattr(args, "overlap_param_gather", False):
        _require(args.use_distributed_optimizer,
                 "--overlap-param-gather only supported with distributed optimizer (--use-distributed-optimizer)")
        _require(getattr(args, "overlap_grad_reduce", False),
                 "Must use --overlap-param-gather with --overlap-grad-reduce")
    _require(getattr(args, "ddp_bucket_size", None) is None or args.ddp_bucket_size > 0,
             "--ddp-bucket-size must be positive")


def data_prefixes(data_path):
    """Prefixes of a '--data-path [w1] p1 [w2] p2' list (weights are numbers)."""
    out = []
    for item in data_path:
        try:
            float(item)
        except ValueError:
            out.append(item)
    return out


def validate_schedule_flags(args) -> None:
    """Iteration- or sample-based training, as upstream: the two sets of flags never mix.

    Sample-based: ``--train-iters`` becomes ``--train-samples // global batch``; ``--lr-decay-samples``
    defaults to ``--train-samples``. :func:`scheduler_steps` turns either into megatron-core's sample counts."""
    samples = getattr(args, "train_samples", None)
    sample_flags = (("--train-samples", samples), ("--lr-decay-samples", getattr(args, "lr_decay_samples", None)),
                    ("--lr-warmup-samples", getattr(args, "lr_warmup_samples", 0) or None))
    _require(getattr(args, "lr_warmup_init", 0.0) >= 0.0, "--lr-warmup-init must be >= 0")
    if samples is None:
        given = [flag for flag, value in sample_flags if value is not None]
        _require(not given, f"{', '.join(given)}: sample-based schedule flags need --train-samples (this run "
                 "counts --train-iters)")
        return
    iteration_flags = (("--train-iters", args.train_iters), ("--lr-decay-iters", args.lr_decay_iters),
                       ("--lr-warmup-iters", args.lr_warmup_iters or None))
    given = [flag for flag, value in iteration_flags if value is not None]
    _require(not given, f"{', '.join(given)}: iteration-based flags cannot be combined with --train-samples "
             "(use --lr-decay-samples / --lr-warmup-samples)")
    _require(samples >= 0, "--train-samples must be >= 0")
    _require(args.lr_warmup_fraction is None or not args.lr_warmup_samples,
             "use either --lr-warmup-fraction or --lr-warmup-samples, not both")
    if args.lr_decay_samples is None:
        args.lr_decay_samples = samples
    _require(args.lr_decay_samples > 0 or samples == 0, "--lr-decay-samples must be positive")
    args.train_iters = samples // args.global_batch_size


def scheduler_steps(args) -> dict:
    """megatron-core OptimizerParamScheduler's warmup, decay and weight-decay lengths, in samples (upstream's
    get_optimizer_param_scheduler): sample flags as given, iteration flags times the global batch size."""
    gbs = args.global_batch_size
    if getattr(args, "train_samples", None) is not None:
        decay = args.lr_decay_samples
        warmup = args.lr_warmup_samples
        wd_incr = args.train_samples
    else:
        decay = max(args.lr_decay_iters or args.train_iters, 1) * gbs
        warmup = args.lr_warmup_steps * gbs
        wd_incr = max(args.train_iters, 1) * gbs
    if args.lr_warmup_fraction is not None:
        warmup = args.lr_warmup_fraction * decay
    return dict(lr_warmup_steps=warmup, lr_decay_steps=max(decay, 1), wd_incr_steps=max(wd_incr, 1))


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def validate_upstream_values(args) -> None:
    """Upstream flags this stack defines but not every value of: the values it cannot run are refused by name
    with the reason; upstream aliases resolve to the path that runs here."""
    impl = getattr(args, "transformer_impl", "local")
    if impl == "transformer_engine":
        raise ConfigError("--transformer-impl transformer_engine is not supported: " + (
            "Transformer Engine is not installed" if not _have("transformer_engine") else
            "the DSLM layer specs are built from megatron-core's local modules") + "; use --transformer-impl local")
    _require(impl != "inference_optimized", "--transformer-impl inference_optimized is not supported: inference "
             "serving; this stack trains and finetunes only")
    backend = getattr(args, "attention_backend", "auto")
    if getattr(args, "use_flash_attn", False):
        _require(backend in ("auto", "flash", "sdpa"),
                 f"--use-flash-attn means --attention-backend flash; it conflicts with --attention-backend {backend}")
        backend = "flash"
    _require(backend != "fused", "--attention-backend fused is not supported: cuDNN fused attention runs through "
             "Transformer Engine, which this stack does not use; use auto, sdpa (flash) or local")
    # flash: torch's SDPA (FlashAttention kernels on CUDA for fp16/bf16); unfused: megatron-core's local core
    args.attention_backend = {"flash": "sdpa", "unfused": "local"}.get(backend, backend)
    optimizer = getattr(args, "optimizer", "adam")
    _require(optimizer in ("adam", "sgd"), f"--optimizer {optimizer} is not supported: Muon / Lion / SOAP are not "
             "part of megatron-core's optimizers here; use adam or sgd")
    fmt = getattr(args, "ckpt_format", "torch_dist")
    _require(fmt == "torch_dist", f"--ckpt-format {fmt} is not supported: checkpoints here are megatron-core "
             "distributed checkpoints (torch_dist), which reshard across TP/PP/DP")
    if getattr(args, "distributed_backend", "nccl") == "gloo":
        import torch

        _require(args.cpu or not torch.cuda.is_available(), "--distributed-backend gloo on GPUs is not implemented "
                 "yet: GPU runs use nccl; add --cpu for a gloo (CPU mode) run")
    if args.train_iters and args.lr is not None:
        steps = scheduler_steps(args)
        _require(steps["lr_warmup_steps"] < steps["lr_decay_steps"],
                 f"the learning-rate warmup ({steps['lr_warmup_steps']:g} samples) must be shorter than the decay "
                 f"({steps['lr_decay_steps']:g} samples)")
        _require(getattr(args, "lr_warmup_init", 0.0) <= args.lr,
                 f"--lr-warmup-init {args.lr_warmup_init} exceeds --lr {args.lr}")
    minutes = getattr(args, "exit_duration_in_mins", None)
    _require(minutes is None or minutes >= 0, "--exit-duration-in-mins must be >= 0")
    _require(getattr(args, "tensorboard_log_interval", 1) > 0, "--tensorboard-log-interval must be positive")
    if getattr(args, "wandb_project", None) and not getattr(args, "dry_run", False):
        _require(_have("wandb"), "--wandb-project needs the optional wandb package (pip install wandb); "
                 "WANDB_MODE=offline logs without a network")
