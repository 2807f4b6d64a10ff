"""Shared command lines for the GPT training tests (tiny shapes, CPU, mock data)."""

import re

TINY_GPT = [
    "pretrain_gpt.py", "--num-layers", "4", "--hidden-size", "64", "--num-attention-heads", "4",
    "--seq-length", "32", "--max-position-embeddings", "32", "--micro-batch-size", "2",
    "--global-batch-size", "8", "--lr", "1e-3", "--lr-warmup-iters", "2", "--mock-data", "--vocab-size", "255",  # +1 EOD = 256: same padding at TP 1 and 2
    "--log-interval", "1", "--eval-iters", "0", "--use-cpu-initialization", "--seed", "7",
]
NO_DROPOUT = ["--hidden-dropout", "0", "--attention-dropout", "0"]

_LOSS = re.compile(r"iteration\s+(\d+)/\s*\d+ \|.*?\| lm loss: ([0-9.E+-]+) \|")


def losses(stdout: str) -> dict:
    """{iteration: lm loss} parsed from upstream-shaped log lines."""
    return {int(m.group(1)): float(m.group(2)) for m in _LOSS.finditer(stdout)}


def metric_records(path, split: str = "train") -> dict:
    """{iteration: record} of one split of a run's JSONL metrics file (--metrics-file)."""
    from megatron.training.metrics import read_metrics

    return {r["iteration"]: r for r in read_metrics(str(path), split=split)}


def assert_ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
