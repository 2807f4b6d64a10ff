"""The training loop on megatron-core: DDP, optimizer, LR schedule, pipeline schedules, eval, checkpoints, logs.

Entry scripts bring three providers and call :func:`pretrain` (upstream's contract):

- ``model_provider(pre_process, post_process, config) -> MegatronModule``
- ``datasets_provider(train_val_test_num_samples) -> (train_ds, valid_ds, test_ds)``
- ``forward_step(data_iterator, model) -> (output_tensor, loss_func)`` where
  ``loss_func(output_tensor) -> (loss, {"lm loss": detached tensor, ...})``; every key is averaged over
  micro-batches and data-parallel ranks and logged as ``key: value``.

Finetuning (``tasks/``) reuses :func:`setup_model_and_optimizer`, :func:`train_step` and :func:`evaluate`
instead of writing a second loop.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Callable, Dict, List, Optional

import torch

from megatron.training import checkpointing, global_vars
from megatron.training.config import build_parser
from megatron.training.global_vars import print_rank_0, print_rank_last
from megatron.training.validate import ConfigError, validate_args


# --------------------------------------------------------------------------------------------- set-up

def parse_args(extra_args_provider=None, args_defaults=None, argv=None):
    parser = build_parser(extra_args_provider)
    if args_defaults:
        parser.set_defaults(**args_defaults)
    return parser.parse_args(argv)


def initialize_megatron(extra_args_provider=None, args_defaults=None, argv=None):
    """Parse and validate flags, start the process groups (gloo on CPU), seed, build the tokenizer."""
    from megatron.training.initialize import initialize_distributed, set_random_seed
    from megatron.training.model_setup import resolve_embedding_corr
    from megatron.training.tokenizers import build_tokenizer

    args = parse_args(extra_args_provider, args_defaults, argv)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    validate_args(args, world_size)  # before any process group: bad input fails fast on every rank
    initialize_distributed(args.tensor_model_parallel_size, args.pipeline_model_parallel_size,
                           force_cpu=args.cpu, timeout_minutes=args.distributed_timeout_minutes)
    tokenizer = build_tokenizer(args.tokenizer_type, vocab_file=args.vocab_file, merge_file=args.merge_file,
                                tokenizer_model=args.tokenizer_model, vocab_size=args.vocab_size,
                                make_vocab_size_divisible_by=args.make_vocab_size_divisible_by,
                                tensor_model_parallel_size=args.tensor_model_parallel_size)
    args.padded_vocab_size = tokenizer.padded_vocab_size
    corr_source = resolve_embedding_corr(args)
    global_vars.set_args(args)
    global_vars.set_tokenizer(tokenizer)
    set_random_seed(args.seed)
    from megatron.training.perf import cpu_compat

    print_rank_0(f"> world size {args.world_size} (TP {args.tensor_model_parallel_size}, PP "
                 f"{args.pipeline_model_parallel_size}, DP {args.data_parallel_size}), backend "
                 f"{'gloo (CPU mode)' if cpu_compat.is_cpu_mode() else 'nccl'}, init scheme {args.init_scheme}, "
                 f"{'Post-LN' if args.apply_residual_connection_post_layernorm else 'Pre-LN'}, "
                 f"padded vocab {args.padded_vocab_size}, embedding corr r0 {args.embedding_corr:.4f} ({corr_source})")
    return args


def run_main(main: Callable[[], None]) -> None:
    """Run an entry point: configuration/data errors become one line on stderr and exit status 2."""
    from megatron.training.tokenizers import TokenizerError

    try:
        main()
    except (ConfigError, TokenizerError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
    # Tear the process groups down before interpreter exit: leaving gloo's threads to static destructors
    # intermittently aborts the process ("terminate called without an active exception", SIGABRT) after
    # a run that finished fine.
    from megatron.training.initialize import destroy_distributed

    destroy_distributed()


def get_optimizer_config(args):
    from megatron.core.optimizer import OptimizerConfig

    return OptimizerConfig(
        optimizer="adam", lr=args.lr or 0.0, min_lr=args.min_lr, weight_decay=args.weight_decay,
        adam_beta1=args.adam_beta1, adam_beta2=args.adam_beta2, adam_eps=args.adam_eps,
        clip_grad=args.clip_grad, bf16=args.bf16, fp16=args.fp16, params_dtype=torch.float32,
        loss_scale=args.loss_scale, initial_loss_scale=args.initial_loss_scale,
        use_distributed_optimizer=args.use_distributed_optimizer,
    )


def get_scheduler(args, optimizer):
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    gbs = args.global_batch_size
    return OptimizerParamScheduler(
        optimizer, init_lr=0.0 if args.lr_warmup_steps else (args.lr or 0.0), max_lr=args.lr or 0.0,
        min_lr=args.min_lr, lr_warmup_steps=args.lr_warmup_steps * gbs,
        lr_decay_steps=max(args.lr_decay_iters, 1) * gbs, lr_decay_style=args.lr_decay_style,
        start_wd=args.weight_decay, end_wd=args.weight_decay, wd_incr_steps=max(args.train_iters, 1) * gbs,
        wd_incr_style="constant",
    )


def build_model(model_provider, args) -> List[torch.nn.Module]:
    """One model chunk for this pipeline stage, on its device, wrapped in megatron-core DDP."""
    from megatron.core import parallel_state as ps
    from megatron.core.distributed import DistributedDataParallelConfig
    from megatron.core.transformer.module import Float16Module
    from megatron.training import perf
    from megatron.training.perf import cpu_compat
    from megatron.training.model_setup import transformer_config_from_args

    config = transformer_config_from_args(args)
    model = model_provider(pre_process=ps.is_pipeline_first_stage(), post_process=ps.is_pipeline_last_stage(),
                           config=config)
    if not cpu_compat.is_cpu_mode():
        model.cuda(torch.cuda.current_device())
    if args.fp16 or args.bf16:
        model = Float16Module(config, model)
    ddp_config = DistributedDataParallelConfig(grad_reduce_in_fp32=True,
                                               use_distributed_optimizer=args.use_distributed_optimizer)
    model = perf.wrap_ddp(config, ddp_config, model, args.grad_buffer_impl)
    return [model]


def setup_model_and_optimizer(model_provider, args=None):
    """Model chunks (DDP-wrapped), megatron-core optimizer and LR scheduler, restored from --load if given."""
    from megatron.core.distributed import finalize_model_grads
    from megatron.core.optimizer import get_megatron_optimizer
    from megatron.training import perf

    args = args or global_vars.get_args()
    model = build_model(model_provider, args)
    optimizer = get_megatron_optimizer(get_optimizer_config(args), model)
    optimizer = perf.apply_to_optimizer(optimizer, model, args.grad_buffer_impl)
    scheduler = get_scheduler(args, optimizer)
    config = checkpointing.unwrap_model(model[0]).config
    config.finalize_model_grads_func = finalize_model_grads
    config.no_sync_func = model[0].no_sync
    config.grad_scale_func = optimizer.scale_loss

    args.iteration = 0
    if args.load is not None:
        args.iteration, _ = checkpointing.load_checkpoint(
            model, optimizer, scheduler, args.load, load_optim=not args.no_load_optim,
            load_rng=not args.no_load_rng, finetune=args.finetune)
        if args.iteration:
            print_rank_0(f"> resumed from {args.load} at iteration {args.iteration}")
        elif checkpointing.read_tracker(args.load) is None:
            print_rank_0(f"> no checkpoint under --load {args.load}: starting from scratch")
        perf.after_optimizer_load(optimizer)
    n_params = sum(p.numel() for p in model[0].parameters())
    print_rank_0(f"> parameters on rank 0 (first pipeline stage, one TP shard): {n_params:,}")
    return model, optimizer, scheduler


# --------------------------------------------------------------------------------------------- data

class PretrainingSampler:
    """Deterministic sequential batches that resume at ``consumed_samples`` (each DP rank takes its slice)."""

    def __init__(self, total_samples: int, consumed_samples: int, micro_batch_size: int, dp_rank: int,
                 dp_size: int):
        self.total, self.consumed = total_samples, consumed_samples
        self.mbs, self.dp_rank, self.dp_size = micro_batch_size, dp_rank, dp_size

    def __len__(self):
        return (self.total - self.consumed) // (self.mbs * self.dp_size)

    def __iter__(self):
        step = self.mbs * self.dp_size
        for start in range(self.consumed, self.total - step + 1, step):
            first = start + self.dp_rank * self.mbs
            yield list(range(first, first + self.mbs))


def build_data_iterator(dataset, consumed_samples: int, args, cyclic: bool = False):
    """An iterator of micro-batches (dicts of tensors) for this data-parallel rank; None for no dataset."""
    from megatron.core import parallel_state as ps

    if dataset is None or len(dataset) == 0:
        return None

    def batches():
        consumed = consumed_samples % len(dataset) if cyclic else consumed_samples
        while True:
            sampler = PretrainingSampler(len(dataset), consumed, args.micro_batch_size,
                                         ps.get_data_parallel_rank(), ps.get_data_parallel_world_size())
            # Own generator: a DataLoader otherwise draws its base seed from the global RNG, which shifts
            # the dropout stream and breaks exact resume.
            loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=args.num_workers,
                                                 pin_memory=torch.cuda.is_available(),
                                                 generator=torch.Generator().manual_seed(args.seed))
            yield from loader
            if not cyclic:
                return
            consumed = 0

    return batches()


def num_samples_per_split(args):
    gbs = args.global_batch_size
    evals = (args.train_iters // args.eval_interval + 1) * args.eval_iters if args.eval_iters else 0
    return [args.train_iters * gbs, evals * gbs, 0]  # the test split is never evaluated during pretraining


# --------------------------------------------------------------------------------------------- steps

def _reduce_loss_dicts(loss_dicts: List[Dict[str, torch.Tensor]]) -> Dict[str, float]:
    """Mean of each logged value over micro-batches and data-parallel ranks (last pipeline stage only)."""
    from megatron.core import parallel_state as ps

    if not loss_dicts or not ps.is_pipeline_last_stage():
        return {}
    keys = sorted(loss_dicts[0])
    stacked = torch.stack([torch.stack([d[k].float().reshape(()) for k in keys]) for d in loss_dicts]).mean(0)
    torch.distributed.all_reduce(stacked, group=ps.get_data_parallel_group())
    stacked /= ps.get_data_parallel_world_size()
    return dict(zip(keys, stacked.tolist()))


def train_step(forward_step, data_iterator, model, optimizer, scheduler, args=None):
    """One optimizer step over ``args.num_microbatches`` micro-batches; returns (losses, skipped, grad_norm)."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    args = args or global_vars.get_args()
    optimizer.zero_grad()
    for chunk in model:  # after the optimizer's zero_grad: GradBufferDDP points .grad back at the buffer
        chunk.zero_grad_buffer()
    loss_dicts = get_forward_backward_func()(
        forward_step_func=forward_step, data_iterator=data_iterator, model=model,
        num_microbatches=args.num_microbatches, seq_length=args.seq_length,
        micro_batch_size=args.micro_batch_size, decoder_seq_length=args.seq_length, forward_only=False)
    update_ok, grad_norm, _ = optimizer.step()
    if update_ok:
        scheduler.step(increment=args.global_batch_size)
    return _reduce_loss_dicts(loss_dicts), not update_ok, grad_norm


def evaluate(forward_step, data_iterator, model, num_iters: int, args=None) -> Dict[str, float]:
    """Forward-only pass over ``num_iters`` global batches; mean of each logged value."""
    from megatron.core.pipeline_parallel import get_forward_backward_func

    args = args or global_vars.get_args()
    for chunk in model:
        chunk.eval()
    totals: Dict[str, float] = {}
    done = 0
    with torch.no_grad():
        for _ in range(num_iters):
            try:
                loss_dicts = get_forward_backward_func()(
                    forward_step_func=forward_step, data_iterator=data_iterator, model=model,
                    num_microbatches=args.num_microbatches, seq_length=args.seq_length,
                    micro_batch_size=args.micro_batch_size, decoder_seq_length=args.seq_length,
                    forward_only=True)
            except StopIteration:
                break
            for k, v in _reduce_loss_dicts(loss_dicts).items():
                totals[k] = totals.get(k, 0.0) + v
            done += 1
    for chunk in model:
        chunk.train()
    return {k: v / max(done, 1) for k, v in totals.items()}


# --------------------------------------------------------------------------------------------- logging

def _hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class TrainingLogger:
    """Upstream-shaped log lines (` iteration 5/10 | ... | lm loss: 1.023456E+01 | ...`) plus TensorBoard."""

    def __init__(self, args):
        self.args = args
        self.start = time.time()
        self.window_start = time.time()
        self.window_iters = 0
        self.sums: Dict[str, float] = {}
        self.counts: Dict[str, int] = {}
        self.skipped = 0
        self.nan_iters = 0
        self.grad_norm = None
        self.writer = None
        if args.tensorboard_dir and global_vars.is_last_rank():
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=args.tensorboard_dir)

    def record(self, iteration: int, losses: Dict[str, float], skipped: bool, grad_norm, lr: float):
        self.window_iters += 1
        self.skipped += int(skipped)
        for k, v in losses.items():
            if math.isnan(v) or math.isinf(v):
                self.nan_iters += 1
                continue
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1
        self.grad_norm = grad_norm
        if self.writer is not None:
            for k, v in losses.items():
                self.writer.add_scalar(k, v, iteration)
            self.writer.add_scalar("learning-rate", lr, iteration)
            if grad_norm is not None:
                self.writer.add_scalar("grad-norm", grad_norm, iteration)

    def maybe_print(self, iteration: int, start_iteration: int, lr: float, loss_scale: float):
        a = self.args
        if iteration % a.log_interval != 0 and iteration != a.train_iters:
            return
        now = time.time()
        per_iter = (now - self.window_start) / max(self.window_iters, 1)
        tokens_per_s = a.global_batch_size * a.seq_length / max(per_iter, 1e-9)
        elapsed = now - self.start
        eta = per_iter * (a.train_iters - iteration)
        parts = [f" iteration {iteration:8d}/{a.train_iters:8d}",
                 f"consumed samples: {iteration * a.global_batch_size:12d}",
                 f"elapsed time per iteration (ms): {per_iter * 1000:.1f}",
                 f"tokens/s: {tokens_per_s:.0f}",
                 f"learning rate: {lr:.6E}",
                 f"global batch size: {a.global_batch_size:5d}"]
        for k in sorted(self.sums):
            parts.append(f"{k}: {self.sums[k] / self.counts[k]:.6E}")
        if a.fp16:
            parts.append(f"loss scale: {loss_scale:.1f}")
        if self.grad_norm is not None:
            parts.append(f"grad norm: {self.grad_norm:.3f}")
        parts += [f"number of skipped iterations: {self.skipped:3d}",
                  f"number of nan iterations: {self.nan_iters:3d}",
                  f"elapsed: {_hms(elapsed)}", f"ETA: {_hms(eta)}"]
        print_rank_last(" | ".join(parts) + " |")
        self.sums, self.counts = {}, {}
        self.skipped = self.nan_iters = 0
        self.window_start, self.window_iters = now, 0

    def log_eval(self, iteration: int, results: Dict[str, float], split: str = "validation"):
        parts = [f" {split} loss at iteration {iteration}"]
        for k, v in sorted(results.items()):
            parts.append(f"{k} value: {v:.6E}")
            if "loss" in k:
                parts.append(f"{k} PPL: {math.exp(min(v, 20)):.6E}")
            if self.writer is not None:
                self.writer.add_scalar(f"{split}/{k}", v, iteration)
        line = " | ".join(parts) + " |"
        print_rank_last("-" * len(line) + "\n" + line + "\n" + "-" * len(line))


# --------------------------------------------------------------------------------------------- loop

class _MomentLogging:
    """Attaches DSLM's moment hooks only on logging iterations (no hooks at all on the others)."""

    def __init__(self, args, model):
        self.interval = args.log_moments_interval
        self.observer = None
        if not self.interval:
            return
        from megatron.dslm.mcore.observers import MomentObserver

        self.observer = MomentObserver([checkpointing.unwrap_model(m) for m in model])
        self.path = args.moments_file or os.path.join(args.tensorboard_dir or args.save or ".", "moments.jsonl")
        self.writer = None
        if args.tensorboard_dir and global_vars.is_rank_0():
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=os.path.join(args.tensorboard_dir, "moments"))

    def wants(self, iteration: int) -> bool:
        return self.observer is not None and iteration % self.interval == 0

    def before(self, iteration: int):
        if self.wants(iteration):
            self.observer.attach()

    def after(self, iteration: int):
        if not self.wants(iteration):
            return
        from megatron.dslm.mcore.observers import write_moment_records

        records = self.observer.collect()
        self.observer.detach()
        if global_vars.is_rank_0() and records:
            write_moment_records(self.path, records, iteration, tb_writer=self.writer)


def train(forward_step, model, optimizer, scheduler, train_iterator, valid_iterator, args=None) -> int:
    """Run from ``args.iteration`` to ``args.train_iters``; returns the last iteration reached."""
    args = args or global_vars.get_args()
    logger = TrainingLogger(args)
    moments = _MomentLogging(args, model)
    iteration = args.iteration
    start_iteration = iteration
    for chunk in model:
        chunk.train()
    while iteration < args.train_iters:
        moments.before(iteration + 1)
        losses, skipped, grad_norm = train_step(forward_step, train_iterator, model, optimizer, scheduler, args)
        iteration += 1
        moments.after(iteration)
        lr = optimizer.param_groups[0]["lr"]
        logger.record(iteration, losses, skipped, grad_norm, lr)
        logger.maybe_print(iteration, start_iteration, lr, optimizer.get_loss_scale().item())
        if args.eval_iters and valid_iterator is not None and iteration % args.eval_interval == 0:
            logger.log_eval(iteration, evaluate(forward_step, valid_iterator, model, args.eval_iters, args))
        if args.save and args.save_interval and iteration % args.save_interval == 0:
            save(iteration, model, optimizer, scheduler, args)
        if args.exit_interval and iteration % args.exit_interval == 0:
            print_rank_0(f"> exiting at iteration {iteration} (--exit-interval)")
            break
    if logger.writer is not None:
        logger.writer.close()
    return iteration


def save(iteration, model, optimizer, scheduler, args):
    t0 = time.time()
    path = checkpointing.save_checkpoint(iteration, model, optimizer, scheduler, args.save, args=args)
    print_rank_0(f"> saved checkpoint {path} in {time.time() - t0:.1f}s")


def pretrain(datasets_provider, model_provider, forward_step, extra_args_provider=None, args_defaults=None,
             argv=None) -> None:
    """Upstream's pretrain(): initialise, build model/optimizer/data, train, evaluate, save."""
    args = initialize_megatron(extra_args_provider, args_defaults, argv)
    model, optimizer, scheduler = setup_model_and_optimizer(model_provider, args)
    train_ds, valid_ds, test_ds = datasets_provider(num_samples_per_split(args))
    consumed = args.iteration * args.global_batch_size
    train_iter = build_data_iterator(train_ds, consumed, args)
    valid_iter = build_data_iterator(valid_ds, 0, args, cyclic=True)
    if train_iter is None and args.train_iters > args.iteration:
        raise ConfigError("the training split is empty: check --data-path and --split")
    iteration = train(forward_step, model, optimizer, scheduler, train_iter, valid_iter, args)
    if args.save and iteration > args.iteration and (not args.save_interval or iteration % args.save_interval):
        save(iteration, model, optimizer, scheduler, args)
    if args.eval_iters and valid_ds is not None and len(valid_ds):
        TrainingLogger(args).log_eval(iteration, evaluate(
            forward_step, build_data_iterator(valid_ds, 0, args, cyclic=True), model, args.eval_iters, args),
            split="validation (end of training)")
