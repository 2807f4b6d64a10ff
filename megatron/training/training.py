"""The training loop on megatron-core: DDP, optimizer, LR schedule, pipeline schedules, eval, checkpoints, logs.

Entry scripts bring three providers and call :func:`pretrain` with upstream's order,
``pretrain(datasets_provider, model_provider, ModelType.encoder_or_decoder, forward_step)``:

- ``model_provider(pre_process, post_process[, vp_stage][, config][, pg_collection]) -> MegatronModule``
  (each keyword is passed where the signature names it)
- ``datasets_provider(train_val_test_num_samples) -> (train_ds, valid_ds, test_ds)``
- ``forward_step(data_iterator, model) -> (output_tensor, loss_func)`` where ``loss_func(output_tensor)``
  returns upstream's ``(loss, {"lm loss": detached mean, ...})`` or ``(loss_sum, num_tokens,
  {"lm loss": tensor([sum, count]), ...})``; every key is reduced over micro-batches and data-parallel ranks
  (a mean per micro-batch averaged, a [sum, count] pair token-weighted) and logged as ``key: value``.

Finetuning (``tasks/``) reuses :func:`setup_model_and_optimizer`, :func:`train_step` and :func:`evaluate`
instead of writing a second loop. Data order lives in ``megatron.training.data_iterators``; console lines,
TensorBoard, the JSONL metrics file and moment logging in ``megatron.training.metrics``.
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import math
import os
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

from megatron.training import checkpointing, exit_signal, global_vars
from megatron.training.config import build_parser
from megatron.training.data_iterators import build_data_iterator, num_samples_per_split
from megatron.training.global_vars import print_rank_0
from megatron.training.metrics import MomentLogging, TrainingLogger
from megatron.training.validate import ConfigError, validate_args


# --------------------------------------------------------------------------------------------- set-up

def parse_args(extra_args_provider=None, args_defaults=None, argv=None):
    parser = build_parser(extra_args_provider)
    if args_defaults:
        parser.set_defaults(**args_defaults)
    return parser.parse_args(argv)


def initialize_megatron(extra_args_provider=None, args_defaults=None, argv=None, get_embedding_ranks=None,
                        get_position_embedding_ranks=None, store=None):
    """Parse and validate flags, start the process groups (gloo on CPU), seed, build the tokenizer.

    ``get_embedding_ranks`` / ``get_position_embedding_ranks`` / ``store``: upstream's pretrain() keywords,
    handed to megatron-core's model-parallel set-up and ``init_process_group``."""
    from megatron.training.initialize import initialize_distributed, set_random_seed
    from megatron.training.model_setup import resolve_embedding_corr
    from megatron.training.tokenizers import build_tokenizer_from_args

    args = parse_args(extra_args_provider, args_defaults, argv)
    if getattr(args, "dry_run", False):  # validate and describe the run, then exit 0: no groups, model or data
        from megatron.training.dry_run import dry_run

        dry_run(args)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    validate_args(args, world_size)  # before any process group: bad input fails fast on every rank
    initialize_distributed(args.tensor_model_parallel_size, args.pipeline_model_parallel_size,
                           force_cpu=args.cpu, timeout_minutes=args.distributed_timeout_minutes,
                           get_embedding_ranks=get_embedding_ranks,
                           get_position_embedding_ranks=get_position_embedding_ranks, store=store)
    _set_virtual_pipeline(args)
    if args.save and torch.distributed.get_rank() == 0:
        from megatron.training import save_lock

        save_lock.check_tracker_direction(args, checkpointing.read_tracker)
        save_lock.acquire(args.save, warn=print)
    tokenizer = build_tokenizer_from_args(args)
    args.padded_vocab_size = tokenizer.padded_vocab_size
    corr_source = resolve_embedding_corr(args)
    global_vars.set_args(args)
    global_vars.set_tokenizer(tokenizer)
    set_random_seed(args.seed)
    from megatron.perf import cpu_compat

    print_rank_0(f"> world size {args.world_size} (TP {args.tensor_model_parallel_size}, PP "
                 f"{args.pipeline_model_parallel_size}, DP {args.data_parallel_size}), backend "
                 f"{'gloo (CPU mode)' if cpu_compat.is_cpu_mode() else 'nccl'}, init scheme {args.init_scheme}, "
                 f"{'Post-LN' if args.apply_residual_connection_post_layernorm else 'Pre-LN'}, "
                 f"padded vocab {args.padded_vocab_size}, embedding corr r0 {args.embedding_corr:.4f} ({corr_source})")
    _print_pipeline_bubble(args)
    return args


def _set_virtual_pipeline(args) -> None:
    """Tell megatron-core's parallel state the number of model chunks per pipeline rank (None: plain schedule).

    The value ``initialize_model_parallel(virtual_pipeline_model_parallel_size=...)`` records (the schedule
    choice in ``get_forward_backward_func`` reads it); chunks get their ``vp_stage`` explicitly in build_model."""
    from megatron.core import parallel_state as ps

    ps.set_virtual_pipeline_model_parallel_world_size(getattr(args, "virtual_pipeline_model_parallel_size", None))


def _print_pipeline_bubble(args) -> None:
    from megatron.training.validate import pipeline_bubble_fraction

    pp, m = args.pipeline_model_parallel_size, args.num_microbatches
    if pp == 1:
        return
    vp = getattr(args, "virtual_pipeline_model_parallel_size", None)
    formula = f"(p-1)/(v*m+p-1) with v={vp}" if vp else "(p-1)/(m+p-1)"
    print_rank_0(f"> pipeline: {pp} stages x {vp or 1} model chunks per stage, {m} micro-batches per step: "
                 f"expected bubble {pipeline_bubble_fraction(pp, m, vp):.1%} of a step ({formula}, p={pp}, m={m})")


class NonFiniteError(RuntimeError):
    """Training produced a non-finite loss, grad norm or parameter (``--check-for-nan-in-loss-and-grad``).

    Raised on every rank at the same iteration, before anything of that iteration is saved; :func:`run_main`
    turns it into one line on stderr and exit status 3."""


_IN_RUN_MAIN = False  # True while run_main runs an entry point: pretrain() then runs inside it, not again


def run_main(main: Callable[[], None]) -> None:
    """Run an entry point: configuration/data errors become one line on stderr and exit status 2, a
    non-finite loss or grad norm exit status 3."""
    from megatron.training.tokenizers import TokenizerError

    from megatron.training.initialize import destroy_distributed

    global _IN_RUN_MAIN
    status, outer, _IN_RUN_MAIN = 0, _IN_RUN_MAIN, True
    try:
        main()
    except (ConfigError, TokenizerError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    except NonFiniteError as err:
        # Every rank stops here together (the verdict is agreed), so the groups can be torn down cleanly;
        # the line is printed once, by the rank that holds the losses.
        if global_vars.is_last_rank():
            print(f"error: {err}", file=sys.stderr, flush=True)
        status = 3
    finally:
        _IN_RUN_MAIN = outer
    # Tear the process groups down before interpreter exit: leaving gloo's threads to static destructors
    # intermittently aborts the process ("terminate called without an active exception", SIGABRT) after
    # a run that finished fine.
    destroy_distributed()
    if status:
        sys.exit(status)


def get_optimizer_config(args):
    from megatron.core.optimizer import OptimizerConfig

    return OptimizerConfig(
        optimizer=getattr(args, "optimizer", "adam"), lr=args.lr or 0.0, min_lr=args.min_lr,
        weight_decay=args.weight_decay, sgd_momentum=getattr(args, "sgd_momentum", 0.9),
        adam_beta1=args.adam_beta1, adam_beta2=args.adam_beta2, adam_eps=args.adam_eps,
        clip_grad=args.clip_grad, bf16=args.bf16, fp16=args.fp16, params_dtype=torch.float32,
        loss_scale=args.loss_scale, initial_loss_scale=args.initial_loss_scale,
        use_distributed_optimizer=args.use_distributed_optimizer, overlap_param_gather=args.overlap_param_gather,
    )


def get_scheduler(args, optimizer):
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    from megatron.training.validate import scheduler_steps

    # upstream's get_optimizer_param_scheduler: lengths in samples, iteration- or sample-based
    return OptimizerParamScheduler(
        optimizer, init_lr=getattr(args, "lr_warmup_init", 0.0), max_lr=args.lr or 0.0, min_lr=args.min_lr,
        lr_decay_style=args.lr_decay_style, start_wd=args.weight_decay, end_wd=args.weight_decay,
        wd_incr_style="constant", **scheduler_steps(args),
        override_opt_param_scheduler=getattr(args, "override_opt_param_scheduler", False),
        use_checkpoint_opt_param_scheduler=getattr(args, "use_checkpoint_opt_param_scheduler", False),
    )


def build_model(model_provider, args) -> List[torch.nn.Module]:
    """This pipeline rank's model chunks on its device, each wrapped in megatron-core DDP.

    One chunk, or under the interleaved pipeline one per virtual stage, built with megatron-core's ``vp_stage``
    (its layers' global numbers, hence their init draws and checkpoint keys, come from it): only the first
    chunk of the first stage embeds, only the last chunk of the last stage has the head."""
    from megatron.core import parallel_state as ps
    from megatron.core.distributed import DistributedDataParallelConfig
    from megatron.core.enums import ModelType
    from megatron.core.transformer.module import Float16Module
    from megatron import perf
    from megatron.perf import cpu_compat
    from megatron.training.model_setup import transformer_config_from_args

    config = transformer_config_from_args(args)
    vp = getattr(args, "virtual_pipeline_model_parallel_size", None)
    config.virtual_pipeline_model_parallel_size = vp
    if vp is not None:
        # Upstream's interleaved default (batch_p2p_comm = not overlap_p2p_comm). Also needed for correctness at
        # PP=2, where the previous and next stage are the same rank: a batched exchange posts both directions'
        # sends to one peer and they are matched in posting order (activations received as gradients); the
        # unbatched ops put the two directions on different groups.
        config.overlap_p2p_comm, config.batch_p2p_comm = True, False
    chunks = []
    for vp_stage in range(vp or 1):
        if vp is None:
            model = call_model_provider(model_provider, ps.is_pipeline_first_stage(), ps.is_pipeline_last_stage(),
                                        config)
        else:
            model = call_model_provider(model_provider,
                                        ps.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage),
                                        ps.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage),
                                        config, vp_stage)
        if not hasattr(model, "model_type"):  # the schedules read it; megatron-core's models set it themselves
            model.model_type = ModelType.encoder_or_decoder
        if not cpu_compat.is_cpu_mode():
            model.cuda(torch.cuda.current_device())
        if args.fp16 or args.bf16:
            model = Float16Module(config, model)
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=True, use_distributed_optimizer=args.use_distributed_optimizer,
            overlap_grad_reduce=args.overlap_grad_reduce, overlap_param_gather=args.overlap_param_gather,
            bucket_size=args.ddp_bucket_size, average_in_collective=args.ddp_average_in_collective)
        chunks.append(perf.wrap_ddp(config, ddp_config, model, args.grad_buffer_impl))
    return chunks


def call_model_provider(model_provider, pre_process: bool, post_process: bool, config, vp_stage=None):
    """One model chunk from ``model_provider``, given the keywords its signature names (all, with ``**kwargs``).

    Upstream's providers range from ``(pre_process, post_process)`` through ``vp_stage`` to ``config`` and
    ``pg_collection`` (megatron-core's groups); ours take ``config``. A provider without ``vp_stage`` cannot
    build the chunks of the interleaved pipeline."""
    try:
        params = inspect.signature(model_provider).parameters
    except (TypeError, ValueError):  # no signature to read (a C callable): pass everything
        params = None

    def takes(name: str) -> bool:
        return (params is None or name in params
                or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()))

    kwargs = {"pre_process": pre_process, "post_process": post_process}
    if takes("config"):
        kwargs["config"] = config
    if takes("vp_stage"):
        kwargs["vp_stage"] = vp_stage
    elif vp_stage is not None:
        raise ConfigError(f"the model provider {getattr(model_provider, '__name__', model_provider)!r} takes no "
                          "vp_stage argument, which the interleaved pipeline (--num-layers-per-virtual-pipeline-"
                          "stage) needs to build each model chunk: add vp_stage=None to its signature")
    if takes("pg_collection"):
        from megatron.core.process_groups_config import ProcessGroupCollection

        kwargs["pg_collection"] = ProcessGroupCollection.use_mpu_process_groups()
    return model_provider(**kwargs)


def setup_model_and_optimizer(model_provider, args=None):
    """Model chunks (DDP-wrapped), megatron-core optimizer and LR scheduler, restored from --load if given."""
    from megatron.core.distributed import finalize_model_grads
    from megatron.core.optimizer import get_megatron_optimizer
    from megatron import perf

    args = args or global_vars.get_args()
    model = build_model(model_provider, args)
    optimizer = get_megatron_optimizer(get_optimizer_config(args), model)
    optimizer = perf.apply_to_optimizer(optimizer, model, args.grad_buffer_impl)
    scheduler = get_scheduler(args, optimizer)
    config = checkpointing.unwrap_model(model[0]).config
    config.finalize_model_grads_func = finalize_model_grads
    config.no_sync_func = model[0].no_sync if len(model) == 1 else [chunk.no_sync for chunk in model]
    config.grad_scale_func = optimizer.scale_loss
    if args.overlap_grad_reduce:  # upstream (align_grad_reduce): pipeline schedules start each chunk's grad sync
        syncs = [chunk.start_grad_sync for chunk in model]
        config.grad_sync_func = syncs[0] if len(syncs) == 1 else syncs

    args.iteration = 0
    if args.load is not None:
        args.iteration, _ = checkpointing.load_checkpoint(
            model, optimizer, scheduler, args.load, load_optim=not args.no_load_optim,
            load_rng=not args.no_load_rng, finetune=args.finetune, args=args)
        if args.iteration:
            print_rank_0(f"> resumed from {args.load} at iteration {args.iteration}")
        elif checkpointing.read_tracker(args.load) is None:
            print_rank_0(f"> no checkpoint under --load {args.load}: starting from scratch")
        perf.after_optimizer_load(optimizer)
    n_params = sum(p.numel() for chunk in model for p in chunk.parameters())
    chunks = f", {len(model)} model chunks" if len(model) > 1 else ""
    print_rank_0(f"> parameters on rank 0 (first pipeline stage{chunks}, one TP shard): {n_params:,}")
    return model, optimizer, scheduler


# --------------------------------------------------------------------------------------------- steps

def _loss_sums(loss_dicts: List[Dict[str, torch.Tensor]]) -> Dict[str, Tuple[float, float]]:
    """Each logged value as (numerator, denominator), summed over micro-batches and data-parallel ranks (last
    pipeline stage only; {} elsewhere): value = numerator / denominator.

    A one-element value (a 2-tuple loss function's per-micro-batch mean) counts once per micro-batch, so the
    value is the mean over micro-batches; a two-element ``[sum, count]`` (upstream's 3-tuple report) adds both
    parts, so the value is the token-weighted mean of upstream's training_log. Sums stay separate so an
    evaluation can add them over its batches before dividing, as upstream's does."""
    from megatron.core import parallel_state as ps

    if not loss_dicts or not ps.is_pipeline_last_stage():
        return {}
    keys = sorted(loss_dicts[0])
    widths = [loss_dicts[0][k].numel() for k in keys]
    bad = [k for k, w in zip(keys, widths) if w not in (1, 2)]
    if bad:
        raise ValueError(f"logged loss values must be a scalar or [sum, count]; got {bad}")
    rows = torch.stack([torch.cat([d[k].detach().float().reshape(-1) for k in keys]) for d in loss_dicts])
    columns = torch.cat([rows.sum(0), rows.new_tensor([float(len(loss_dicts))])])
    torch.distributed.all_reduce(columns, group=ps.get_data_parallel_group())
    batches = columns[-1].item()  # micro-batches over all data-parallel ranks
    sums, at = {}, 0
    for key, width in zip(keys, widths):
        sums[key] = (columns[at].item(), batches if width == 1 else columns[at + 1].item())
        at += width
    return sums


def _divide(sums: Dict[str, Tuple[float, float]]) -> Dict[str, float]:
    """numerator / denominator per key; a count of 0 (every token masked) gives 0, not a division error."""
    return {key: num / max(den, 1.0) for key, (num, den) in sums.items()}


def _reduce_loss_dicts(loss_dicts: List[Dict[str, torch.Tensor]]) -> Dict[str, float]:
    """Each logged value of one step over micro-batches and data-parallel ranks (see :func:`_loss_sums`)."""
    return _divide(_loss_sums(loss_dicts))


def chunk_data_iterators(data_iterator, model):
    """What megatron-core's schedule takes: the iterator itself, or under the interleaved pipeline one per chunk.

    Every chunk reads the step's micro-batches in the same order, so a single iterator is split with
    ``itertools.tee`` for the step: each copy yields the same items and the source advances by one step's worth
    (one data loader per rank, not one per chunk). A list is taken as given (upstream's one iterator per chunk).
    """
    import itertools

    if len(model) == 1 or isinstance(data_iterator, list):
        return data_iterator
    if data_iterator is None:
        return [None] * len(model)
    return list(itertools.tee(data_iterator, len(model)))


def train_step(forward_step, data_iterator, model, optimizer, scheduler, args=None):
    """One optimizer step over ``args.num_microbatches`` micro-batches; returns (losses, skipped, grad_norm)."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    args = args or global_vars.get_args()
    optimizer.zero_grad()
    for chunk in model:  # after the optimizer's zero_grad: GradBufferDDP points .grad back at the buffer
        chunk.zero_grad_buffer()
    loss_dicts = get_forward_backward_func()(
        forward_step_func=forward_step, data_iterator=chunk_data_iterators(data_iterator, model), model=model,
        num_microbatches=args.num_microbatches, seq_length=args.seq_length,
        micro_batch_size=args.micro_batch_size, decoder_seq_length=args.seq_length, forward_only=False)
    update_ok, grad_norm, _ = optimizer.step()
    if update_ok:
        scheduler.step(increment=args.global_batch_size)
    return _reduce_loss_dicts(loss_dicts), not update_ok, grad_norm


def evaluate(forward_step, data_iterator, model, num_iters: int, args=None) -> Dict[str, float]:
    """Forward-only pass over ``num_iters`` global batches; each logged value over all of them (a [sum, count]
    value token-weighted over every batch, a scalar the mean over every micro-batch)."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    args = args or global_vars.get_args()
    for chunk in model:
        chunk.eval()
    totals: Dict[str, Tuple[float, float]] = {}
    with torch.no_grad():
        for _ in range(num_iters):
            try:
                loss_dicts = get_forward_backward_func()(
                    forward_step_func=forward_step, data_iterator=chunk_data_iterators(data_iterator, model),
                    model=model,
                    num_microbatches=args.num_microbatches, seq_length=args.seq_length,
                    micro_batch_size=args.micro_batch_size, decoder_seq_length=args.seq_length,
                    forward_only=True)
            except StopIteration:
                break
            for key, (num, den) in _loss_sums(loss_dicts).items():
                total = totals.get(key, (0.0, 0.0))
                totals[key] = (total[0] + num, total[1] + den)
    for chunk in model:
        chunk.train()
    return _divide(totals)


def non_loss_data(forward_step, data_iterator, model, args, collect: Optional[Callable] = None):
    """Upstream's evaluation side channel: ``collect(model)`` if given, else one forward-only step whose loss
    functions are called as ``loss_func(output_tensor, non_loss_data=True)``; their results, one per micro-batch
    (on the last pipeline stage; [] elsewhere). Every rank runs it, so tensor-parallel collectives line up."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    if collect is not None:
        return collect(model)
    for chunk in model:
        chunk.eval()
    try:
        with torch.no_grad():
            return get_forward_backward_func()(
                forward_step_func=forward_step, data_iterator=chunk_data_iterators(data_iterator, model),
                model=model, num_microbatches=args.num_microbatches, seq_length=args.seq_length,
                micro_batch_size=args.micro_batch_size, decoder_seq_length=args.seq_length, forward_only=True,
                collect_non_loss_data=True)
    finally:
        for chunk in model:
            chunk.train()


# --------------------------------------------------------------------------------------------- NaN guard

def find_non_finite(losses: Dict[str, float], grad_norm) -> Optional[str]:
    """What this rank sees non-finite in one step: ``'non-finite loss (lm loss = nan)'``, a grad norm, or None.

    A skipped fp16 step has no grad norm (None): an overflow under dynamic loss scaling is not an error."""
    for key in sorted(losses):
        if not math.isfinite(losses[key]):
            return f"non-finite loss ({key} = {losses[key]})"
    if grad_norm is not None and not math.isfinite(float(grad_norm)):
        return f"non-finite grad norm ({float(grad_norm)})"
    return None


def agree_non_finite(problem: Optional[str]) -> Optional[str]:
    """The verdict of all ranks: losses exist on the last pipeline stage only, and every rank must stop at
    the same iteration (a rank that stops alone leaves the others waiting in the next collective).

    One max-reduction of a flag per call; the message is exchanged only when some rank found a problem, and
    the last rank's wins (it holds the losses)."""
    if not torch.distributed.is_initialized() or torch.distributed.get_world_size() == 1:
        return problem
    from megatron.training.device import input_device

    flag = torch.tensor([0.0 if problem is None else 1.0], device=input_device())
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    if flag.item() == 0.0:
        return None
    problems: List[Optional[str]] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(problems, problem)
    return next(p for p in reversed(problems) if p is not None)


def last_checkpoint(args) -> str:
    """The checkpoint a stopped run leaves as latest (under --save, else --load), or 'none'."""
    for root in (getattr(args, "save", None), getattr(args, "load", None)):
        iteration = checkpointing.read_tracker(root) if root else None
        if iteration is not None:
            return checkpointing.checkpoint_dir(root, iteration)
    return "none"


def _params_finite(model) -> bool:
    params = [p.detach() for chunk in model for p in chunk.parameters()]
    return not params or bool(torch.stack([torch.isfinite(p).all() for p in params]).all())


# --------------------------------------------------------------------------------------------- loop

def train(forward_step, model, optimizer, scheduler, train_iterator, valid_iterator, args=None,
          logger: Optional[TrainingLogger] = None, after_eval: Optional[Callable] = None) -> int:
    """Run from ``args.iteration`` to ``args.train_iters``; returns the last iteration reached.

    ``logger``: the caller's, kept open (pretrain logs the final evaluation to the same metrics file);
    ``after_eval(iteration, valid_iterator)``: called after each periodic evaluation (upstream's non-loss data)."""
    args = args or global_vars.get_args()
    own_logger = logger is None
    logger = logger or TrainingLogger(args)
    moments = MomentLogging(args, model)
    param_gather = ParamGatherHooks(model, args)
    iteration = args.iteration
    for chunk in model:
        chunk.train()
    stop_signal = exit_signal.from_args(args)
    try:
        with stop_signal or contextlib.nullcontext():
            iteration = _train_loop(forward_step, model, optimizer, scheduler, train_iterator, valid_iterator,
                                    args, logger, moments, param_gather, iteration, stop_signal, after_eval)
    finally:
        moments.close()
        if own_logger:
            logger.close()
    return iteration


def _train_loop(forward_step, model, optimizer, scheduler, train_iterator, valid_iterator, args, logger, moments,
                param_gather, iteration, stop_signal=None, after_eval=None) -> int:
    check = getattr(args, "check_for_nan_in_loss_and_grad", False)
    while iteration < args.train_iters:
        # moments are labelled by the updates already applied: iteration 0 is the init profile (the first
        # batch's forward/backward, before the first optimizer step)
        moments.before(iteration)
        losses, skipped, grad_norm = train_step(forward_step, train_iterator, model, optimizer, scheduler, args)
        moments.after(iteration)
        iteration += 1
        problem = agree_non_finite(find_non_finite(losses, grad_norm)) if check else None
        if not skipped and problem is None:
            param_gather.enable()
        lr = optimizer.param_groups[0]["lr"]
        logger.record(iteration, losses, skipped, grad_norm, lr)
        logger.maybe_print(iteration, lr, optimizer.get_loss_scale().item(), force=problem is not None)
        if problem is not None:  # before this iteration's evaluation and save
            message = f"{problem} at iteration {iteration}; last checkpoint: {last_checkpoint(args)}"
            logger.log_stop(iteration, message)
            raise NonFiniteError(message)
        if validates(args, valid_iterator) and iteration % args.eval_interval == 0:
            with param_gather.paused():
                logger.log_eval(iteration, evaluate(forward_step, valid_iterator, model, args.eval_iters, args))
                if after_eval is not None:
                    after_eval(iteration, valid_iterator)
        if args.save and args.save_interval and iteration % args.save_interval == 0:
            with param_gather.paused():
                save(iteration, model, optimizer, scheduler, args)
        if args.exit_interval and iteration % args.exit_interval == 0:
            print_rank_0(f"> exiting at iteration {iteration} (--exit-interval)")
            break
        if exit_duration_reached(args):
            print_rank_0(f"> exiting at iteration {iteration} (--exit-duration-in-mins "
                         f"{args.exit_duration_in_mins}: {(time.time() - _PROCESS_START) / 60:.1f} min)")
            break
        if stop_signal is not None and stop_signal.received():
            print_rank_0(f"> exiting at iteration {iteration} ({stop_signal.signame} received, "
                         "--exit-signal-handler): saving, no final evaluation")
            args.exit_signal_received = True
            break
    param_gather.disable()  # the last step's params are gathered before a final evaluation or save
    return iteration


def validates(args, valid_iterator) -> bool:
    """Whether this run evaluates: ``args.do_valid`` where pretrain agreed it over the ranks (a rank holding no
    validation data still takes part: it receives its batches by broadcast), else whether this rank has data."""
    do_valid = getattr(args, "do_valid", None)
    return bool(args.eval_iters) and (valid_iterator is not None if do_valid is None else bool(do_valid))


_PROCESS_START = time.time()  # upstream's --exit-duration-in-mins counts from the start of the program


def exit_duration_reached(args) -> bool:
    """True on every rank once any rank has run ``--exit-duration-in-mins`` (max-reduced, as upstream)."""
    minutes = getattr(args, "exit_duration_in_mins", None)
    if minutes is None:
        return False
    done = torch.tensor([float(time.time() - _PROCESS_START > minutes * 60.0)])
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        from megatron.perf import cpu_compat

        if not cpu_compat.is_cpu_mode():
            done = done.cuda()
        torch.distributed.all_reduce(done, op=torch.distributed.ReduceOp.MAX)
    return bool(done.item())


class ParamGatherHooks:
    """megatron-core DDP's forward pre-hooks of the overlapped param all-gather, switched as upstream's train().

    Off until a step has succeeded (a bad load or init then fails on its own rank, not inside the first
    all-gather); off, with a synchronous gather, around evaluation, checkpoints and after the last step, so
    those see the updated parameters. Does nothing without ``--overlap-param-gather``.
    """

    def __init__(self, model, args):
        self.model = model
        self.used = bool(args.use_distributed_optimizer and getattr(args, "overlap_param_gather", False))
        # DDP registers the hooks at construction; an earlier train() may have taken them off
        self.on = self.used and all(getattr(chunk, "remove_forward_pre_hook_handles", None) for chunk in model)
        self.disable(param_sync=False)

    def enable(self) -> None:
        if self.used and not self.on:
            for chunk in self.model:
                chunk.enable_forward_pre_hook()
            self.on = True

    def disable(self, param_sync: bool = True) -> None:
        if self.on:
            for chunk in self.model:
                chunk.disable_forward_pre_hook(param_sync=param_sync)
            self.on = False

    @contextlib.contextmanager
    def paused(self):
        was_on = self.on
        self.disable()
        try:
            yield
        finally:
            if was_on:
                self.enable()


def save(iteration, model, optimizer, scheduler, args):
    """Save a checkpoint; under --check-for-nan-in-loss-and-grad never one with a non-finite parameter."""
    if getattr(args, "check_for_nan_in_loss_and_grad", False):
        problem = agree_non_finite(None if _params_finite(model) else "non-finite parameters")
        if problem is not None:
            raise NonFiniteError(f"{problem} at iteration {iteration}; last checkpoint: {last_checkpoint(args)}")
    t0 = time.time()
    path = checkpointing.save_checkpoint(iteration, model, optimizer, scheduler, args.save, args=args)
    print_rank_0(f"> saved checkpoint {path} in {time.time() - t0:.1f}s")


def check_model_type(model_type) -> None:
    """Refuse a ``model_type`` this stack does not train, by name: only megatron-core's encoder_or_decoder
    (one transformer stack: GPT, BERT) is built here."""
    from megatron.core.enums import ModelType

    if model_type is ModelType.encoder_or_decoder:
        return
    if callable(model_type):
        raise ConfigError(
            f"pretrain(): the third argument is model_type, got the function "
            f"{getattr(model_type, '__name__', repr(model_type))!r}: upstream's order is pretrain("
            "train_valid_test_dataset_provider, model_provider, ModelType.encoder_or_decoder, forward_step_func)")
    if isinstance(model_type, enum.Enum):
        raise ConfigError(f"pretrain(): model_type {type(model_type).__name__}.{model_type.name} is not supported: "
                          "only ModelType.encoder_or_decoder (one transformer stack, as GPT and BERT) trains here")
    raise ConfigError(f"pretrain(): model_type must be megatron.core.enums.ModelType.encoder_or_decoder, got "
                      f"{type(model_type).__name__} {model_type!r}")


def _has_data(dataset) -> bool:
    return dataset is not None and len(dataset) > 0


def agree_data(train_ds, valid_ds) -> Tuple[bool, bool]:
    """Whether any rank holds training / validation data (max over all ranks).

    Upstream-style providers build datasets only on the ranks that read them (megatron-core's
    ``is_built_on_rank``: tensor-parallel rank 0 of the first and last pipeline stages); the others get None,
    receive their batches by broadcast, and still run every step and every evaluation."""
    from megatron.training.device import input_device

    flags = torch.tensor([float(_has_data(train_ds)), float(_has_data(valid_ds))], device=input_device())
    if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
    return bool(flags[0].item()), bool(flags[1].item())


def pretrain(train_valid_test_dataset_provider, model_provider, model_type, forward_step_func=None,
             process_non_loss_data_func=None, extra_args_provider=None, args_defaults=None,
             get_embedding_ranks=None, get_position_embedding_ranks=None, non_loss_data_func=None, store=None,
             inprocess_call_wrapper=None, argv=None) -> None:
    """Upstream's pretrain(), same positional order and keywords: initialise, build model/optimizer/data, train,
    evaluate, save.

    Called directly, as upstream entry scripts do, it runs under :func:`run_main`, so bad input is one
    ``error:`` line and a non-zero exit. The dataset provider is called on every rank, what its
    ``is_distributed = True`` asks for (megatron-core's dataset builder decides where to build), so the
    attribute changes nothing here. ``process_non_loss_data_func(data, iteration, writer)`` gets
    :func:`non_loss_data` after each evaluation on the last rank when TensorBoard is on;
    ``inprocess_call_wrapper`` (upstream's in-process restart) must be None. ``argv``: flags instead of
    sys.argv. ``forward_step_func`` is required (its default lets the old three-argument order fail by name)."""
    def run():
        check_model_type(model_type)
        if forward_step_func is None:
            raise ConfigError("pretrain(): forward_step_func (the fourth argument) is missing")
        if inprocess_call_wrapper is not None:
            raise ConfigError("pretrain(): inprocess_call_wrapper is not supported: this stack has no in-process "
                              "restart")
        args = initialize_megatron(extra_args_provider, args_defaults, argv, get_embedding_ranks=get_embedding_ranks,
                                   get_position_embedding_ranks=get_position_embedding_ranks, store=store)
        _pretrain(train_valid_test_dataset_provider, model_provider, forward_step_func, args,
                  process_non_loss_data_func, non_loss_data_func)

    if _IN_RUN_MAIN:
        run()
    else:
        run_main(run)


def _pretrain(datasets_provider, model_provider, forward_step, args, process_non_loss_data_func,
              non_loss_data_func) -> None:
    model, optimizer, scheduler = setup_model_and_optimizer(model_provider, args)
    train_ds, valid_ds, test_ds = datasets_provider(num_samples_per_split(args))
    has_train, has_valid = agree_data(train_ds, valid_ds)
    if not has_train and args.train_iters > args.iteration:
        raise ConfigError("the training split is empty: check --data-path and --split")
    args.do_valid = bool(args.eval_iters) and has_valid
    consumed = args.iteration * args.global_batch_size
    train_iter = build_data_iterator(train_ds, consumed, args)
    valid_iter = build_data_iterator(valid_ds, 0, args, cyclic=True)
    logger = TrainingLogger(args)

    after_eval = None
    if process_non_loss_data_func is not None or non_loss_data_func is not None:
        def after_eval(iteration, data_iterator):
            data = non_loss_data(forward_step, data_iterator, model, args, collect=non_loss_data_func)
            if process_non_loss_data_func is not None and logger.writer is not None:
                process_non_loss_data_func(data, iteration, logger.writer)

    try:
        iteration = (args.iteration if getattr(args, "skip_train", False)  # upstream: evaluate only
                     else train(forward_step, model, optimizer, scheduler, train_iter, valid_iter, args, logger=logger,
                                after_eval=after_eval))
        if args.save and iteration > args.iteration and (not args.save_interval or iteration % args.save_interval):
            save(iteration, model, optimizer, scheduler, args)
        if args.do_valid and not getattr(args, "exit_signal_received", False):
            final_iter = build_data_iterator(valid_ds, 0, args, cyclic=True)
            logger.log_eval(iteration, evaluate(forward_step, final_iter, model, args.eval_iters, args),
                            end_of_training=True)
            if after_eval is not None:
                after_eval(iteration, final_iter)
    finally:
        logger.close()
