"""--use-distributed-optimizer checkpoints resume: bitwise at the same data-parallel size, within 1e-5 at another."""

import shutil

import pytest

from tests.support import run_torchrun
from tests.training.gpt_cases import NO_DROPOUT, assert_ok, metric_records

SMALL_GPT = [
    "pretrain_gpt.py", "--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4",
    "--seq-length", "16", "--max-position-embeddings", "16", "--micro-batch-size", "2",
    "--global-batch-size", "8", "--lr", "1e-3", "--lr-warmup-iters", "2", "--mock-data", "--vocab-size", "255",
    "--log-interval", "1", "--eval-iters", "0", "--use-cpu-initialization", "--seed", "7",
    "--use-distributed-optimizer", "--train-iters", "6",
]
DROPOUT = ["--hidden-dropout", "0.1", "--attention-dropout", "0.1"]


def _straight_and_resumed(tmp_path, impl: str, save_dp: int, load_dp: int, extra: list):
    """Train 6 iterations at ``save_dp``, saving at 3 and 6; resume the iteration-3 checkpoint at ``load_dp``.

    The uninterrupted run is also the one that saved (two runs instead of three keep the test short), so
    saving must not disturb training either."""
    argv = SMALL_GPT + ["--grad-buffer-impl", impl] + extra
    ck = tmp_path / "ck"
    straight = run_torchrun(save_dp, argv + ["--save", str(ck), "--save-interval", "3",
                                             "--metrics-file", str(tmp_path / "straight.jsonl")])
    assert_ok(straight)
    assert (ck / "latest_checkpointed_iteration.txt").read_text() == "6"
    shutil.rmtree(ck / "iter_0000006")
    (ck / "latest_checkpointed_iteration.txt").write_text("3")
    second = run_torchrun(load_dp, argv + ["--load", str(ck), "--metrics-file", str(tmp_path / "resumed.jsonl")])
    assert_ok(second)
    assert "resumed from" in second.stdout and "at iteration 3" in second.stdout
    ref, resumed = metric_records(tmp_path / "straight.jsonl"), metric_records(tmp_path / "resumed.jsonl")
    assert sorted(resumed) == [4, 5, 6]
    return ref, resumed


def _assert_exact(ref, resumed):
    for it, record in resumed.items():
        for key in ("lm loss", "grad_norm"):
            assert record[key] == ref[it][key], f"iteration {it} {key}: resumed {record[key]!r} != {ref[it][key]!r}"


@pytest.mark.dist
def test_dp2_resume_is_exact(tmp_path):
    _assert_exact(*_straight_and_resumed(tmp_path, "direct", 2, 2, DROPOUT))


@pytest.mark.slow
@pytest.mark.dist
@pytest.mark.parametrize("impl,dp", [("megatron", 2), ("direct", 1), ("megatron", 1)])
def test_resume_is_exact(tmp_path, impl, dp):
    _assert_exact(*_straight_and_resumed(tmp_path, impl, dp, dp, DROPOUT))


@pytest.mark.slow
@pytest.mark.dist
@pytest.mark.parametrize("impl", ["direct", "megatron"])
def test_dp2_checkpoint_resumes_at_dp1(tmp_path, impl):
    """The optimizer shards of two ranks reshard onto one (RNG streams are per layout: no dropout)."""
    ref, resumed = _straight_and_resumed(tmp_path, impl, 2, 1, NO_DROPOUT)
    for it, record in resumed.items():
        assert record["lm loss"] == pytest.approx(ref[it]["lm loss"], abs=1e-5), f"iteration {it}"


@pytest.mark.slow
@pytest.mark.dist
def test_other_model_parallel_layout_is_refused_clearly(tmp_path):
    """The distributed-optimizer format reshards across DP only: at TP=2 the load stops with one clear line."""
    ck = tmp_path / "ck"
    argv = SMALL_GPT + NO_DROPOUT + ["--train-iters", "3"]
    assert_ok(run_torchrun(2, argv + ["--save", str(ck)]))
    refused = run_torchrun(2, argv + ["--load", str(ck), "--tensor-model-parallel-size", "2"])
    assert refused.returncode != 0
    assert "reshards across data-parallel ranks only" in refused.stderr and "--no-load-optim" in refused.stderr
