"""Finetune a pretrained BERT on a labelled task: epochs of the training loop's own ``train_step``.

No second training loop: model, optimizer and schedule come from ``setup_model_and_optimizer`` and every
step is ``train_step``; this module adds what finetuning has and pretraining lacks: an epoch-shuffled
sampler, per-epoch evaluation with accuracy per validation file, the best checkpoint kept under
``<save>/best``, a predictions file per validation file, and exact resume from ``<save>`` (the latest
epoch-end or ``--exit-interval`` checkpoint; finetuning progress rides in the checkpoint's extra state).
"""

from __future__ import annotations

import dataclasses

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from functools import partial
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from megatron.training import checkpointing
from megatron.training.global_vars import get_args, get_tokenizer, print_rank_0
from megatron.training.validate import ConfigError
from tasks.epochs import epoch_batches, validation_name

_BATCH_KEYS = ("text", "types", "padding_mask", "label", "index")
# Flags that fix the shape or wiring of the pretrained body: finetuning must repeat them.
_SHAPE_FLAGS = ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size", "kv_channels",
                "max_position_embeddings", "num_tokentypes", "padded_vocab_size",
                "apply_residual_connection_post_layernorm", "activation")


@dataclass(frozen=True)
class TaskSpec:
    """What differs between tasks: the label set, the head, and how files become a Dataset.

    ``build_dataset(path, tokenizer, seq_length, strict)`` returns a map-style dataset whose items are dicts
    with int64 arrays ``text``, ``types``, ``padding_mask`` (shape [s], or [num_choices, s] for multiple
    choice), an int ``label`` and a string ``uid`` (see :func:`tasks.main.build_task_dataset`).
    """

    name: str
    label_names: Sequence[str]
    multiple_choice: bool
    build_dataset: Callable

    @property
    def num_classes(self) -> int:
        return len(self.label_names)


# ------------------------------------------------------------------------------------------------ model

def task_model_provider(spec: TaskSpec, pre_process: bool = True, post_process: bool = True, config=None,
                        vp_stage=None):
    """The pretrained BERT body (built exactly like pretrain_bert.py's) with the task's head."""
    from megatron.dslm.mcore.models import build_bert_model
    from megatron.training.model_setup import init_table_from_args, transformer_config_from_args
    from megatron.perf import SpeedOptions

    from tasks.heads import BertWithHead, ClassificationHead, MultipleChoiceHead

    args = get_args()
    config = config or transformer_config_from_args(args)
    table = init_table_from_args(args, "bert")
    bert = build_bert_model(
        config, table, vocab_size=args.padded_vocab_size, max_sequence_length=args.max_position_embeddings,
        num_tokentypes=args.num_tokentypes, add_binary_head=True,  # the pooler comes with the binary head
        pre_process=pre_process, post_process=post_process, vp_stage=vp_stage,
        seed=args.seed,
        # task heads read every position: the masked-positions MLM path does not apply
        speed=dataclasses.replace(SpeedOptions.from_args(args), masked_positions_mlm=False))
    head = None
    if post_process:
        if spec.multiple_choice:
            head = MultipleChoiceHead(args.hidden_size, spec.num_classes, args.hidden_dropout,
                                      table.binary_head_std, args.seed)
        else:
            head = ClassificationHead(args.hidden_size, spec.num_classes, args.hidden_dropout,
                                      table.binary_head_std, args.seed)
    return BertWithHead(bert, head)


def load_pretrained(model_chunks, load_dir: str) -> int:
    """Load the BERT body from a pretraining checkpoint (weights only); the task head stays as initialised.

    Returns the pretraining iteration. Every body parameter must be found: a mismatched shape or a missing
    key (e.g. pretrained with --num-tokentypes 0) is an error, not a silent partial load.
    """
    from megatron.core import dist_checkpointing

    iteration = checkpointing.read_tracker(load_dir)
    if iteration is None:
        raise FileNotFoundError(f"--pretrained-checkpoint {load_dir}: no {checkpointing.TRACKER_FILE} there")
    path = checkpointing.checkpoint_dir(load_dir, iteration)
    saved_args = checkpointing.load_args_from_checkpoint(load_dir)
    args = get_args()
    mismatched = [f"--{k.replace('_', '-')} {getattr(args, k)} (pretrained: {saved_args[k]})" for k in _SHAPE_FLAGS
                  if k in saved_args and saved_args[k] != getattr(args, k, None)]
    if mismatched:
        raise ConfigError(f"the model flags differ from the pretraining run in {load_dir}: " + ", ".join(mismatched))
    model = checkpointing.unwrap_model(model_chunks[0])
    body = {k: v for k, v in model.sharded_state_dict().items() if not k.startswith("task_head.")}
    # Pretrained with --bert-no-binary-head: no pooler in the checkpoint; it keeps its init-table weights.
    saved_keys = dist_checkpointing.load_tensors_metadata(path).keys()
    fresh_pooler = not any(k.startswith("pooler.") for k in saved_keys)
    if fresh_pooler:
        body = {k: v for k, v in body.items() if not k.startswith("pooler.")}
        print_rank_0("> the pretrained checkpoint has no pooler (--bert-no-binary-head): pooler starts from init")
    with torch.no_grad():
        loaded = dist_checkpointing.load({"model": body}, path)["model"]
    missing, _ = model.bert.load_state_dict(loaded, strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state") and not (fresh_pooler and k.startswith("pooler."))]
    if missing:
        raise RuntimeError(f"pretrained checkpoint {path} lacks {missing}")
    print_rank_0(f"> loaded pretrained BERT from {path} (pretraining iteration {iteration})")
    return iteration


# ------------------------------------------------------------------------------------------------- data

def collate(items: List[dict], indices: Sequence[int], trim: bool = False) -> Dict[str, torch.Tensor]:
    """Stack items into a micro-batch; ``trim`` cuts the trailing columns that are padding in every row.

    Trimming is exact for BERT (absolute positions stay 0..n-1 and padded keys get zero attention weight) and
    halves the finetuning cost on GLUE-length pairs (MNLI-style pairs: median 54 of 128 tokens). It is used
    without pipeline parallelism only, where stages exchange fixed [seq, batch, hidden] tensors.
    """
    batch = {k: torch.as_tensor(np.stack([np.asarray(it[k]) for it in items])).long()
             for k in ("text", "types", "padding_mask")}
    if trim:
        mask = batch["padding_mask"]
        used = int(mask.reshape(-1, mask.shape[-1]).any(dim=0).nonzero().max()) + 1 if mask.any() else 1
        batch = {k: v[..., :used].contiguous() for k, v in batch.items()}
    batch["label"] = torch.as_tensor([int(it["label"]) for it in items], dtype=torch.long)
    batch["index"] = torch.as_tensor(list(indices), dtype=torch.long)
    return batch


def micro_batches(dataset, global_indices: np.ndarray, micro_batch_size: int, dp_rank: int, dp_size: int,
                  trim: bool = False):
    """This data-parallel rank's micro-batches of one global batch (each DP rank takes a contiguous share)."""
    share = len(global_indices) // dp_size
    mine = global_indices[dp_rank * share:(dp_rank + 1) * share]
    for start in range(0, len(mine), micro_batch_size):
        idx = mine[start:start + micro_batch_size]
        yield collate([dataset[int(i)] for i in idx], idx, trim)


def eval_micro_batches(dataset, micro_batch_size: int, dp_rank: int, dp_size: int, trim: bool = False):
    """All samples once, padded with index -1 rows (sample 0 repeated) so every micro-batch is full."""
    n = len(dataset)
    step = micro_batch_size * dp_size
    total = int(math.ceil(n / step)) * step
    order = np.concatenate([np.arange(n), -np.ones(total - n, dtype=np.int64)])
    batches = []
    for start in range(0, total, step):
        idx = order[start + dp_rank * micro_batch_size: start + (dp_rank + 1) * micro_batch_size]
        batch = collate([dataset[max(int(i), 0)] for i in idx], idx, trim)
        batches.append(batch)
    return batches


def _trim_padding(args) -> bool:
    return args.pipeline_model_parallel_size == 1


# ------------------------------------------------------------------------------------------ forward step

def get_batch(data_iterator):
    """Next micro-batch on the model's device; TP ranks take it from TP rank 0 so all see the same samples."""
    from megatron.core import parallel_state, tensor_parallel
    from megatron.training.device import to_input_device

    if parallel_state.get_tensor_model_parallel_world_size() > 1:
        data = next(data_iterator) if parallel_state.get_tensor_model_parallel_rank() == 0 else None
        batch = tensor_parallel.broadcast_data(list(_BATCH_KEYS), data, torch.int64)
    else:
        batch = next(data_iterator)
    return to_input_device(batch)


def loss_func(labels: torch.Tensor, indices: torch.Tensor, collector: Optional[list], logits: torch.Tensor):
    """Cross entropy over classes (or over options for multiple choice); rows with index -1 are padding."""
    keep = (indices >= 0).float()
    per_row = F.cross_entropy(logits.float(), labels, reduction="none")
    loss = (per_row * keep).sum() / keep.sum().clamp(min=1.0)
    predictions = logits.argmax(dim=-1)
    accuracy = ((predictions == labels).float() * keep).sum() / keep.sum().clamp(min=1.0)
    if collector is not None:
        collector.append((indices.detach().clone(), predictions.detach().clone()))
    # The schedule divides the returned loss in place: log clones.
    return loss, {"loss": loss.detach().clone(), "accuracy": accuracy.detach().clone()}


def forward_step(data_iterator, model, collector: Optional[list] = None, use_tokentypes: bool = True):
    batch = get_batch(data_iterator)
    tokens, types, mask = batch["text"], batch["types"], batch["padding_mask"]
    if tokens.dim() == 3:  # multiple choice: [b, k, s] -> [b*k, s]; the head folds the scores back
        tokens, types, mask = (t.reshape(-1, t.shape[-1]) for t in (tokens, types, mask))
    logits = model(tokens, mask, tokentype_ids=types if use_tokentypes else None)
    return logits, partial(loss_func, batch["label"], batch["index"], collector)


# ------------------------------------------------------------------------------------------- evaluation

def predict(model_chunks, dataset, args) -> np.ndarray:
    """Predicted class per sample of ``dataset`` (every rank gets the full array)."""
    from megatron.core import parallel_state as ps
    from megatron.core.pipeline_parallel import get_forward_backward_func

    mbs = args.eval_micro_batch_size or args.micro_batch_size
    batches = eval_micro_batches(dataset, mbs, ps.get_data_parallel_rank(), ps.get_data_parallel_world_size(),
                                 trim=_trim_padding(args))
    collector: list = []
    for chunk in model_chunks:
        chunk.eval()
    with torch.no_grad():
        get_forward_backward_func()(
            forward_step_func=partial(forward_step, collector=collector, use_tokentypes=args.num_tokentypes > 0),
            data_iterator=iter(batches), model=model_chunks, num_microbatches=len(batches),
            seq_length=args.seq_length, micro_batch_size=mbs, decoder_seq_length=args.seq_length,
            forward_only=True)
    for chunk in model_chunks:
        chunk.train()
    local = [(int(i), int(p)) for idx, pred in collector for i, p in zip(idx.tolist(), pred.tolist()) if i >= 0]
    gathered = [None] * ps.get_data_parallel_world_size()
    torch.distributed.all_gather_object(gathered, local, group=ps.get_data_parallel_group())
    predictions = np.full(len(dataset), -1, dtype=np.int64)
    for part in gathered:
        for i, p in part:
            predictions[i] = p
    if (predictions < 0).any():
        raise RuntimeError(f"evaluation missed {(predictions < 0).sum()} samples")
    return predictions


def write_predictions(path: str, dataset, predictions: np.ndarray, label_names: Sequence[str]) -> None:
    """TSV ``uid prediction label`` written to a temp name, then renamed (never half-written)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("uid\tprediction\tlabel\n")
        for i, pred in enumerate(predictions):
            item = dataset[i]
            f.write(f"{item.get('uid', i)}\t{label_names[pred]}\t{label_names[int(item['label'])]}\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------- the run

def _prune(save_dir: str, keep_iteration: Optional[int]) -> None:
    """Remove every published ``iter_*`` under ``save_dir`` except ``keep_iteration`` (rank 0 only)."""
    if torch.distributed.get_rank() != 0 or not os.path.isdir(save_dir):
        return
    keep = None if keep_iteration is None else os.path.basename(checkpointing.checkpoint_dir(save_dir, keep_iteration))
    for name in os.listdir(save_dir):
        if name.startswith("iter_") and not name.endswith(".tmp") and name != keep:
            shutil.rmtree(os.path.join(save_dir, name), ignore_errors=True)
    if keep_iteration is None:
        tracker = os.path.join(save_dir, checkpointing.TRACKER_FILE)
        if os.path.exists(tracker):
            os.remove(tracker)


def _save_latest(iteration, model, optimizer, scheduler, args, progress: dict) -> None:
    checkpointing.save_checkpoint(iteration, model, optimizer, scheduler, args.save, args=args,
                                  extra_state={"finetune": dict(progress)})
    _prune(args.save, iteration)
    torch.distributed.barrier()


def finetune(spec: TaskSpec, args=None) -> dict:
    """Train for ``--epochs`` over ``--train-data``; evaluate each ``--valid-data`` file after every epoch.

    Returns the progress record: best score/epoch and per-epoch accuracies per validation file.
    """
    from megatron.core import parallel_state as ps
    from megatron.training.training import setup_model_and_optimizer, train_step

    args = args or get_args()
    tokenizer = get_tokenizer()
    if args.lr is None:
        raise ConfigError("--lr is required")
    if args.pipeline_model_parallel_size > 1:
        raise ConfigError("finetuning supports tensor and data parallelism; use --pipeline-model-parallel-size 1 "
                          "(a pipeline-parallel pretraining checkpoint loads at PP=1)")
    t0 = time.time()
    train_ds = spec.build_dataset(args.train_data, tokenizer, args.seq_length, args.strict)
    valid = [(validation_name(p), spec.build_dataset([p], tokenizer, args.seq_length, args.strict))
             for p in (args.valid_data or [])]
    iters_per_epoch = len(train_ds) // args.global_batch_size
    if iters_per_epoch == 0:
        raise ConfigError(f"{len(train_ds)} training examples are fewer than one global batch "
                          f"({args.global_batch_size}): lower --global-batch-size / --micro-batch-size")
    # The LR schedule is built from train_iters: set it before the optimizer exists.
    args.train_iters = args.epochs * iters_per_epoch
    if not args.lr_decay_iters:
        args.lr_decay_iters = args.train_iters
    if args.lr_warmup_fraction is not None:
        args.lr_warmup_steps = int(args.lr_warmup_fraction * args.lr_decay_iters)
    print_rank_0(f"> {spec.name}: {len(train_ds)} training examples, {iters_per_epoch} iterations/epoch x "
                 f"{args.epochs} epochs = {args.train_iters} iterations; validation: "
                 + ", ".join(f"{n} ({len(d)})" for n, d in valid) + f"; data built in {time.time() - t0:.1f}s")

    load_dir, args.load = args.load, None  # resume below, after deciding between resume and pretrained
    model, optimizer, scheduler = setup_model_and_optimizer(partial(task_model_provider, spec), args)
    iteration, extra = 0, {}
    if load_dir and checkpointing.read_tracker(load_dir) is not None:
        iteration, extra = checkpointing.load_checkpoint(
            model, optimizer, scheduler, load_dir, load_optim=not args.no_load_optim, load_rng=not args.no_load_rng)
        print_rank_0(f"> resumed finetuning from {load_dir} at iteration {iteration}")
    elif args.pretrained_checkpoint:
        load_pretrained(model, args.pretrained_checkpoint)
    else:
        print_rank_0("> WARNING: no --pretrained-checkpoint: finetuning from random initialisation")
    progress = dict(extra.get("finetune", {})) or {"best_score": None, "best_epoch": None, "history": []}

    use_tokentypes = args.num_tokentypes > 0
    step_fn = partial(forward_step, use_tokentypes=use_tokentypes)
    dp_rank, dp_size = ps.get_data_parallel_rank(), ps.get_data_parallel_world_size()
    log_losses: Dict[str, float] = {}
    log_count, t_log = 0, time.time()
    for chunk in model:
        chunk.train()
    while iteration < args.train_iters:
        epoch, step = divmod(iteration, iters_per_epoch)
        batches = epoch_batches(len(train_ds), args.global_batch_size, args.seed, epoch)
        losses, skipped, grad_norm = train_step(
            step_fn, micro_batches(train_ds, batches[step], args.micro_batch_size, dp_rank, dp_size,
                                   trim=_trim_padding(args)),
            model, optimizer, scheduler, args)
        iteration += 1
        for k, v in losses.items():
            log_losses[k] = log_losses.get(k, 0.0) + v
        log_count += 1
        if iteration % args.log_interval == 0 or iteration == args.train_iters:
            lr = optimizer.param_groups[0]["lr"]
            parts = " | ".join(f"{k}: {v / log_count:.6E}" for k, v in sorted(log_losses.items()))
            elapsed = (time.time() - t_log) * 1000.0 / log_count
            gn = float(grad_norm) if grad_norm is not None else float("nan")
            print_rank_0(f" iteration {iteration:8d}/{args.train_iters:8d} | epoch {epoch + 1}/{args.epochs} | "
                         f"elapsed time per iteration (ms): {elapsed:.1f} | learning rate: {lr:.6E} | {parts} | "
                         f"grad norm: {gn:.3f} |{' skipped |' if skipped else ''}")
            log_losses, log_count, t_log = {}, 0, time.time()

        epoch_end = iteration % iters_per_epoch == 0
        if epoch_end:
            _end_of_epoch(spec, model, valid, args, progress, iteration // iters_per_epoch, iteration)
        stop = bool(args.exit_interval) and iteration % args.exit_interval == 0
        if args.save and (epoch_end or stop):
            _save_latest(iteration, model, optimizer, scheduler, args, progress)
        if stop and iteration < args.train_iters:
            print_rank_0(f"> exiting at iteration {iteration} (--exit-interval); resume with --load {args.save}")
            return progress

    # Without validation files there is no best/: the last checkpoint is the result and stays.
    if args.save and not args.keep_last and valid:
        if torch.distributed.get_rank() == 0:
            _prune(args.save, None)
        torch.distributed.barrier()
    print_rank_0(f"> finetuning done: best score {progress['best_score']} at epoch {progress['best_epoch']}")
    return progress


def _end_of_epoch(spec: TaskSpec, model, valid, args, progress: dict, epoch: int, iteration: int) -> None:
    """Accuracy per validation file; on a new best (mean accuracy), save ``<save>/best`` and predictions."""
    if not valid:
        return
    accuracies, predictions = {}, {}
    for name, dataset in valid:
        preds = predict(model, dataset, args)
        labels = np.array([int(dataset[i]["label"]) for i in range(len(dataset))])
        accuracies[name] = float((preds == labels).mean()) if len(labels) else float("nan")
        predictions[name] = preds
        print_rank_0(f" validation {spec.name} {name} | epoch {epoch} | accuracy: {accuracies[name]:.4f} "
                     f"({int((preds == labels).sum())}/{len(labels)})")
    score = float(np.mean(list(accuracies.values())))
    progress["history"].append({"epoch": epoch, "iteration": iteration, "accuracy": accuracies})
    if progress["best_score"] is not None and score <= progress["best_score"]:
        return
    progress["best_score"], progress["best_epoch"] = score, epoch
    print_rank_0(f" new best: mean accuracy {score:.4f} at epoch {epoch}")
    if not args.save:
        return
    best_dir = os.path.join(args.save, "best")
    checkpointing.save_checkpoint(iteration, model, None, None, best_dir, args=args,
                                  extra_state={"finetune": dict(progress)})
    _prune(best_dir, iteration)
    if torch.distributed.get_rank() == 0:
        for name, dataset in valid:
            write_predictions(os.path.join(args.save, "predictions", f"{name}.tsv"), dataset,
                              predictions[name], spec.label_names)
        tmp = os.path.join(best_dir, "best.json.tmp")
        with open(tmp, "w") as f:
            json.dump({"epoch": epoch, "iteration": iteration, "mean_accuracy": score, "accuracy": accuracies}, f,
                      indent=1)
        os.replace(tmp, os.path.join(best_dir, "best.json"))
    torch.distributed.barrier()
