"""Overlapped DDP (--overlap-grad-reduce, --overlap-param-gather) at DP=2 computes what the plain runs compute.

Small buckets (--ddp-bucket-size 2000, several per model) make the overlap real: each bucket's collective starts
asynchronously from the backward hooks and the parameter all-gathers run from forward pre-hooks. Without dropout
every run is compared with the one-process run (losses and the in-loop and final validation loss, which need
the parameters gathered before evaluation); with dropout each overlapped run is compared with plain DP=2, whose
ranks draw the same masks for their own micro-batches (a one-process run draws others).
"""

import re

import pytest

from tests.support import run_torchrun
from tests.training.gpt_cases import NO_DROPOUT, assert_ok, losses

SMALL_GPT = [
    "pretrain_gpt.py", "--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4",
    "--seq-length", "16", "--max-position-embeddings", "16", "--micro-batch-size", "2", "--global-batch-size", "8",
    "--train-iters", "3", "--lr", "1e-3", "--mock-data", "--vocab-size", "255", "--log-interval", "1",
    "--eval-interval", "2", "--eval-iters", "1", "--use-cpu-initialization", "--seed", "7",
]
DROPOUT = ["--hidden-dropout", "0.1", "--attention-dropout", "0.1"]
BUCKETS = ["--ddp-bucket-size", "2000"]
OVERLAPPED = {
    "overlap-grad": ["--overlap-grad-reduce", *BUCKETS],
    "distopt-overlap": ["--use-distributed-optimizer", "--overlap-grad-reduce", "--overlap-param-gather", *BUCKETS],
    "distopt-overlap-avg": ["--use-distributed-optimizer", "--overlap-grad-reduce", "--overlap-param-gather",
                            "--ddp-average-in-collective", *BUCKETS],
}
_EVAL = re.compile(r"validation( \(end of training\))? loss at iteration (\d+) \| lm loss value: ([0-9.E+-]+)")


def _run(nproc, flags):
    proc = run_torchrun(nproc, SMALL_GPT + flags, timeout=600)
    assert_ok(proc)
    evals = {(int(it), bool(end)): float(v) for end, it, v in _EVAL.findall(proc.stdout)}
    return losses(proc.stdout), evals


def _assert_equal(ref, got):
    (ref_train, ref_eval), (got_train, got_eval) = ref, got
    assert sorted(got_train) == sorted(ref_train) == [1, 2, 3]
    assert sorted(got_eval) == sorted(ref_eval) == [(2, False), (3, True)]
    for it in ref_train:
        assert got_train[it] == pytest.approx(ref_train[it], abs=1e-5), (it, got_train[it], ref_train[it])
    for key in ref_eval:
        assert got_eval[key] == pytest.approx(ref_eval[key], abs=1e-5), (key, got_eval[key], ref_eval[key])
    assert ref_train[3] < ref_train[1]
    print("max |loss difference|:", max(abs(got_train[i] - ref_train[i]) for i in ref_train),
          "validation:", max(abs(got_eval[k] - ref_eval[k]) for k in ref_eval))


@pytest.fixture(scope="module")
def one_process():
    return _run(1, NO_DROPOUT)


@pytest.fixture(scope="module")
def plain_dp2_dropout():
    return _run(2, DROPOUT)


@pytest.mark.dist
@pytest.mark.parametrize("name", sorted(OVERLAPPED))
def test_overlapped_dp2_matches_one_process(one_process, name):
    _assert_equal(one_process, _run(2, NO_DROPOUT + OVERLAPPED[name]))


@pytest.mark.dist
@pytest.mark.parametrize("name", ["overlap-grad", "distopt-overlap"])
def test_overlapped_dp2_matches_plain_dp2_with_dropout(plain_dp2_dropout, name):
    _assert_equal(plain_dp2_dropout, _run(2, DROPOUT + OVERLAPPED[name]))


@pytest.mark.parametrize("flags,message", [
    (["--overlap-param-gather", "--overlap-grad-reduce"], "only supported with distributed optimizer"),
    (["--overlap-param-gather", "--use-distributed-optimizer"], "with --overlap-grad-reduce"),
])
def test_overlap_param_gather_needs_upstream_companions(flags, message):
    from megatron.training.config import build_parser
    from megatron.training.validate import ConfigError, validate_args

    args = build_parser().parse_args(SMALL_GPT[1:] + flags)
    with pytest.raises(ConfigError, match=message):
        validate_args(args, world_size=2)


def test_direct_grad_buffer_falls_back_under_overlapped_reduce():
    """Overlap starts bucket collectives from megatron's per-parameter hooks: the direct path must keep them."""
    from types import SimpleNamespace

    import torch

    from megatron.perf.grad_buffer import grads_can_alias_buffer

    p = torch.nn.Parameter(torch.zeros(2))
    p.main_grad = torch.zeros(2)
    config = SimpleNamespace()
    assert grads_can_alias_buffer(config, SimpleNamespace(overlap_grad_reduce=False), [p])
    assert not grads_can_alias_buffer(config, SimpleNamespace(overlap_grad_reduce=True), [p])
    assert grads_can_alias_buffer(config, SimpleNamespace(overlap_grad_reduce=False, use_distributed_optimizer=True,
                                                          overlap_param_gather=True), [p])
