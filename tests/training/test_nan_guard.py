"""--check-for-nan-in-loss-and-grad: a diverging run stops with one error line and exit status 3 at the first
non-finite loss, on every rank, before saving anything of that iteration; the tracker keeps the last good
checkpoint. ``--lr 1e3`` at this tiny size reaches a NaN loss at iteration 7 (fp32) or 17 (fp16, after 15
loss-scale overflows, which are skipped steps and not errors)."""

import os
import re
import subprocess
import sys

import pytest

from megatron.training.metrics import read_metrics
from tests.support import REPO_ROOT, cpu_env, free_port, run_python

TINY = [
    "pretrain_gpt.py", "--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4",
    "--seq-length", "16", "--max-position-embeddings", "16", "--micro-batch-size", "2",
    "--global-batch-size", "4", "--mock-data", "--vocab-size", "255", "--log-interval", "5", "--eval-iters", "0",
    "--use-cpu-initialization", "--seed", "7", "--lr", "1e3",
]
_ERROR = re.compile(r"^error: non-finite loss \(lm loss = nan\) at iteration (\d+); last checkpoint: (\S+)$",
                    re.MULTILINE)


def _tensors(obj):
    import torch

    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value)


def _all_finite(ckpt_dir, tmp_path) -> bool:
    """Every floating tensor of a checkpoint (model and optimizer state, all shards) is finite."""
    import torch
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    flat = tmp_path / (os.path.basename(ckpt_dir) + ".pt")
    dcp_to_torch_save(str(ckpt_dir), str(flat))
    tensors = [t for t in _tensors(torch.load(flat, weights_only=False)) if t.is_floating_point()]
    assert len(tensors) > 20, f"{ckpt_dir}: only {len(tensors)} tensors"
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def _saved(ck):
    return sorted(int(p.name[len("iter_"):]) for p in ck.iterdir() if re.fullmatch(r"iter_\d{7}", p.name))


def _check_stopped(proc, ck, tmp_path) -> int:
    """The run stopped at a NaN loss, naming the iteration and its last (finite) checkpoint; returns that iteration."""
    assert proc.returncode == 3, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    errors = _ERROR.findall(proc.stderr)
    assert len(errors) == 1, proc.stderr[-3000:]
    stop, named = int(errors[0][0]), errors[0][1]
    saved = _saved(ck)
    assert saved and max(saved) < stop, (saved, stop)
    tracker = int((ck / "latest_checkpointed_iteration.txt").read_text())
    assert tracker == max(saved) and named == str(ck / f"iter_{tracker:07d}")
    for it in saved:
        assert _all_finite(ck / f"iter_{it:07d}", tmp_path), f"checkpoint {it} has non-finite values"
    records = read_metrics(str(ck / "metrics.jsonl"))
    assert records[-2]["split"] == "train" and records[-2]["iteration"] == stop
    assert records[-2]["nan_iterations"] >= 1
    assert records[-1]["event"] == "stop" and records[-1]["iteration"] == stop
    assert records[-1]["reason"] == f"non-finite loss (lm loss = nan) at iteration {stop}; last checkpoint: {named}"
    return stop


def test_find_non_finite():
    from megatron.training.training import find_non_finite

    assert find_non_finite({"lm loss": 2.0}, 1.5) is None
    assert find_non_finite({"lm loss": 2.0}, None) is None  # a skipped fp16 step
    assert find_non_finite({}, 1.0) is None  # not the last pipeline stage
    assert find_non_finite({"lm loss": 2.0, "sop loss": float("inf")}, 1.0) == "non-finite loss (sop loss = inf)"
    assert find_non_finite({"lm loss": float("nan")}, float("nan")) == "non-finite loss (lm loss = nan)"
    assert find_non_finite({"lm loss": 2.0}, float("inf")) == "non-finite grad norm (inf)"


def test_flag_is_upstreams():
    from megatron.training.config import build_parser

    parser = build_parser()
    assert parser.parse_args([]).check_for_nan_in_loss_and_grad is True
    assert parser.parse_args(["--no-check-for-nan-in-loss-and-grad"]).check_for_nan_in_loss_and_grad is False


@pytest.mark.parametrize("impl", ["direct", "megatron"])
def test_diverging_run_stops_before_saving_nan(tmp_path, impl):
    ck = tmp_path / "ck"
    proc = run_python(TINY + ["--train-iters", "12", "--save", str(ck), "--save-interval", "2",
                              "--grad-buffer-impl", impl], timeout=300)
    assert _check_stopped(proc, ck, tmp_path) == 7


def test_guard_off_keeps_the_old_behaviour(tmp_path):
    ck = tmp_path / "ck"
    proc = run_python(TINY + ["--train-iters", "10", "--save", str(ck), "--save-interval", "2",
                              "--no-check-for-nan-in-loss-and-grad"], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "error:" not in proc.stderr
    assert (ck / "latest_checkpointed_iteration.txt").read_text() == "10"
    assert not _all_finite(ck / "iter_0000010", tmp_path)


def test_fp16_overflow_is_a_skipped_step_and_nan_loss_still_stops(tmp_path):
    ck = tmp_path / "ck"
    proc = run_python(TINY + ["--train-iters", "20", "--save", str(ck), "--save-interval", "2", "--fp16"],
                      timeout=300)
    stop = _check_stopped(proc, ck, tmp_path)
    skipped = sum(r["skipped"] for r in read_metrics(str(ck / "metrics.jsonl"), split="train"))
    assert skipped >= 5 and stop > skipped


@pytest.mark.dist
def test_pipeline_run_stops_on_every_rank(tmp_path):
    """PP=2: only rank 1 sees the loss; rank 0 must stop at the same iteration, not wait in the next step."""
    ck = tmp_path / "ck"
    port = str(free_port())
    procs = []
    for rank in range(2):
        env = cpu_env({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port})
        cmd = [sys.executable, *TINY, "--train-iters", "12", "--save", str(ck), "--save-interval", "2",
               "--pipeline-model-parallel-size", "2", "--distributed-timeout-minutes", "2"]
        procs.append(subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=300))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [3, 3], [o[1][-2000:] for o in outs]
    assert not _ERROR.search(outs[0][1])  # the line comes once, from the rank holding the losses
    last = subprocess.CompletedProcess(procs[1].args, 3, outs[1][0], outs[1][1])
    _check_stopped(last, ck, tmp_path)
