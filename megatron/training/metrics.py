"""What the training loop reports: upstream-shaped console lines, TensorBoard scalars, a JSONL metrics file,
and DSLM's per-layer moments on a schedule.

The console lines keep upstream Megatron-LM's shape for people and their log tools; programs (the
reproduction scripts, benchmarks, tests) read the JSONL metrics file instead, one object per line:

- ``{"event": "start", "iteration": ..., ...}`` when a run (or a resumed run) begins;
- ``{"split": "train", "iteration": ..., "lm loss": ..., "lr": ..., "grad_norm": ..., "tokens_per_s": ...,
  "elapsed_s": ..., "skipped": ..., "nan_iterations": ...}`` per log interval, with the same window averages
  the console line prints;
- ``{"split": "validation", "iteration": ..., "lm loss": ..., "lm loss PPL": ..., "end_of_training": ...}``
  per evaluation;
- ``{"event": "stop", "iteration": ..., "reason": ...}`` when a run is stopped by an error (a non-finite loss
  or grad norm), right after the train record of that iteration.

Non-finite numbers are written as ``null`` so every line is strict JSON.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Dict, Iterable, List, Optional

from megatron.training import checkpointing, global_vars
from megatron.training.global_vars import print_rank_last

PPL_MAX_LOSS = 20.0  # exp() is capped here: a diverged loss would otherwise overflow the PPL


def hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def perplexity(loss: float) -> float:
    return math.exp(min(loss, PPL_MAX_LOSS))


# --------------------------------------------------------------------------------------------- JSONL

def metrics_path(args) -> Optional[str]:
    """``--metrics-file``, else ``<tensorboard-dir>/metrics.jsonl``, else ``<save>/metrics.jsonl``, else None."""
    explicit = getattr(args, "metrics_file", None)
    if explicit:
        return explicit
    folder = getattr(args, "tensorboard_dir", None) or getattr(args, "save", None)
    return os.path.join(folder, "metrics.jsonl") if folder else None


def _strict(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class MetricsWriter:
    """Appends one JSON object per line and flushes it: a killed run keeps every line, a resumed run appends."""

    def __init__(self, path: str):
        self.path = path
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")

    def write(self, record: Dict) -> None:
        line = json.dumps({k: _strict(v) for k, v in record.items()}, allow_nan=False)
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def read_metrics(path, split: Optional[str] = None) -> List[Dict]:
    """The records of a metrics file (those of one ``split`` if given); [] for a missing file.

    A last line cut short by a killed writer is skipped."""
    if not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if split is None or record.get("split") == split:
                records.append(record)
    return records


# --------------------------------------------------------------------------------------------- loop logging

class TrainingLogger:
    """Per-interval window averages to the console (upstream's line shape), TensorBoard and the metrics file.

    Console lines and the metrics file come from the last rank: it sits on the last pipeline stage, the one
    that holds the losses."""

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
        self.wandb = None
        self.metrics = None
        self.last_record = time.time()
        self.flops_per_iteration = None
        if getattr(args, "log_throughput", False):
            from megatron.training.model_setup import model_arch_from_args
            from megatron.training.model_size import flops_per_token

            arch = model_arch_from_args(args, getattr(args, "model_family", "gpt"))
            self.flops_per_iteration = flops_per_token(arch) * args.global_batch_size * args.seq_length
        if not global_vars.is_last_rank():
            return
        if args.tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=args.tensorboard_dir)
        if getattr(args, "wandb_project", None):
            self.wandb = _start_wandb(args)
        path = metrics_path(args)
        if path:
            self.metrics = MetricsWriter(path)
            self.metrics.write({
                "event": "start", "iteration": getattr(args, "iteration", 0), "train_iters": args.train_iters,
                "global_batch_size": args.global_batch_size, "seq_length": args.seq_length,
                "world_size": getattr(args, "world_size", 1), "init_scheme": getattr(args, "init_scheme", None),
                "embedding_corr": getattr(args, "embedding_corr", None), "time": time.time()})

    def record(self, iteration: int, losses: Dict[str, float], skipped: bool, grad_norm, lr: float):
        self.window_iters += 1
        self.skipped += int(skipped)
        for k, v in losses.items():
            if math.isnan(v) or math.isinf(v):
                self.nan_iters += 1
                continue
            self.sums[k] = self.sums.get(k, 0.0) + v
            self.counts[k] = self.counts.get(k, 0) + 1
        self.grad_norm = None if grad_norm is None else float(grad_norm)
        now = time.time()
        step_time, self.last_record = now - self.last_record, now
        if iteration % getattr(self.args, "tensorboard_log_interval", 1):
            return
        scalars = dict(losses)
        scalars["learning-rate"] = lr
        scalars["batch-size"] = self.args.global_batch_size
        if grad_norm is not None:
            scalars["grad-norm"] = float(grad_norm)
        if getattr(self.args, "log_timers_to_tensorboard", False):
            scalars["iteration-time"] = step_time
        if self.flops_per_iteration is not None:
            scalars["throughput"] = self._tflops_per_device(step_time)
        self._scalars(scalars, iteration)

    def _scalars(self, values: Dict[str, float], iteration: int):
        """The same scalars to TensorBoard and Weights & Biases (whichever is on)."""
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, iteration)
        if self.wandb is not None:
            self.wandb.log(values, step=iteration)

    def _tflops_per_device(self, seconds_per_iteration: float) -> float:
        world = max(getattr(self.args, "world_size", None) or 1, 1)
        return self.flops_per_iteration / max(seconds_per_iteration, 1e-9) / world / 1e12

    def maybe_print(self, iteration: int, lr: float, loss_scale: float, force: bool = False):
        """At every log interval (and the last iteration, or when ``force``d: a run about to stop early): one
        console line and one metrics record."""
        a = self.args
        if not force and iteration % a.log_interval != 0 and iteration != a.train_iters:
            return
        now = time.time()
        per_iter = (now - self.window_start) / max(self.window_iters, 1)
        tokens_per_s = a.global_batch_size * a.seq_length / max(per_iter, 1e-9)
        elapsed = now - self.start
        eta = per_iter * (a.train_iters - iteration)
        means = {k: self.sums[k] / self.counts[k] for k in sorted(self.sums)}
        parts = [f" iteration {iteration:8d}/{a.train_iters:8d}",
                 f"consumed samples: {iteration * a.global_batch_size:12d}",
                 f"elapsed time per iteration (ms): {per_iter * 1000:.1f}",
                 f"tokens/s: {tokens_per_s:.0f}"]
        if self.flops_per_iteration is not None:
            parts.append(f"throughput per GPU (TFLOP/s/GPU): {self._tflops_per_device(per_iter):.1f}")
        parts += [f"learning rate: {lr:.6E}", f"global batch size: {a.global_batch_size:5d}"]
        parts += [f"{k}: {v:.6E}" for k, v in means.items()]
        if a.fp16:
            parts.append(f"loss scale: {loss_scale:.1f}")
        if self.grad_norm is not None:
            parts.append(f"grad norm: {self.grad_norm:.3f}")
        parts += [f"number of skipped iterations: {self.skipped:3d}",
                  f"number of nan iterations: {self.nan_iters:3d}",
                  f"elapsed: {hms(elapsed)}", f"ETA: {hms(eta)}"]
        print_rank_last(" | ".join(parts) + " |")
        if self.metrics is not None:
            record = {"split": "train", "iteration": iteration, **means, "lr": lr, "grad_norm": self.grad_norm,
                      "consumed_samples": iteration * a.global_batch_size, "iteration_time_s": per_iter,
                      "tokens_per_s": tokens_per_s, "elapsed_s": elapsed, "skipped": self.skipped,
                      "nan_iterations": self.nan_iters}
            if self.flops_per_iteration is not None:
                record["tflops_per_device"] = self._tflops_per_device(per_iter)
            if a.fp16:
                record["loss_scale"] = loss_scale
            self.metrics.write(record)
        self.sums, self.counts = {}, {}
        self.skipped = self.nan_iters = 0
        self.window_start, self.window_iters = now, 0

    def log_stop(self, iteration: int, reason: str):
        """The metrics record of a run stopped by an error (e.g. a non-finite loss), so programs see why."""
        if self.metrics is not None:
            self.metrics.write({"event": "stop", "iteration": iteration, "reason": reason, "time": time.time()})

    def log_eval(self, iteration: int, results: Dict[str, float], end_of_training: bool = False):
        """One console block and one metrics record for an evaluation (values and, for losses, PPL)."""
        split = "validation (end of training)" if end_of_training else "validation"
        parts = [f" {split} loss at iteration {iteration}"]
        record = {"split": "validation", "iteration": iteration, "end_of_training": end_of_training}
        scalars = {}
        for k, v in sorted(results.items()):
            parts.append(f"{k} value: {v:.6E}")
            record[k] = v
            scalars[f"{split}/{k}"] = v
            if "loss" in k:
                parts.append(f"{k} PPL: {perplexity(v):.6E}")
                record[f"{k} PPL"] = perplexity(v)
                if getattr(self.args, "log_validation_ppl_to_tensorboard", False):
                    scalars[f"{split}/{k} ppl"] = perplexity(v)
        self._scalars(scalars, iteration)
        line = " | ".join(parts) + " |"
        print_rank_last("-" * len(line) + "\n" + line + "\n" + "-" * len(line))
        if self.metrics is not None and results:
            self.metrics.write(record)

    def close(self):
        if self.writer is not None:
            self.writer.close()
        if self.wandb is not None:
            self.wandb.finish()
        if self.metrics is not None:
            self.metrics.close()


def _start_wandb(args):
    """A Weights & Biases run on the last rank (upstream's flags; WANDB_MODE=offline works without a network)."""
    import wandb

    save_dir = args.wandb_save_dir or os.path.join(args.save or ".", "wandb")
    os.makedirs(save_dir, exist_ok=True)
    config = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None), list))}
    return wandb.init(project=args.wandb_project, name=args.wandb_exp_name or None, dir=save_dir, config=config)


# --------------------------------------------------------------------------------------------- moments

class MomentLogging:
    """DSLM's per-layer moments every ``--log-moments-interval`` iterations.

    Hooks are attached only for the logged iterations (:meth:`before` / :meth:`after` around the step), so
    the other steps run without any. Iteration ``k`` is the forward/backward of the model after ``k`` updates
    (the loop's step ``k + 1``): iteration 0, always logged, is the init profile."""

    def __init__(self, args, model: Iterable):
        self.interval = args.log_moments_interval
        self.observer = None
        self.writer = None
        if not self.interval:
            return
        from megatron.dslm.mcore.observers import MomentObserver

        self.observer = MomentObserver([checkpointing.unwrap_model(m) for m in model])
        self.path = args.moments_file or os.path.join(args.tensorboard_dir or args.save or ".", "moments.jsonl")
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

    def close(self):
        if self.writer is not None:
            self.writer.close()
