"""Checkpoint resume is exact (dropout on), and a save killed midway leaves the previous checkpoint usable."""

import os
import signal
import subprocess
import sys
import time

import pytest

from megatron.training.metrics import read_metrics
from tests.support import REPO_ROOT, cpu_env, run_torchrun
from tests.training.gpt_cases import TINY_GPT, assert_ok, losses, metric_records

DROPOUT = ["--hidden-dropout", "0.1", "--attention-dropout", "0.1"]


def test_resume_continues_exactly(tmp_path):
    straight = run_torchrun(1, TINY_GPT + DROPOUT + ["--train-iters", "10"])
    assert_ok(straight)
    first = run_torchrun(1, TINY_GPT + DROPOUT + ["--train-iters", "10", "--save", str(tmp_path / "ck"),
                                                  "--save-interval", "5", "--exit-interval", "5"])
    assert_ok(first)
    assert (tmp_path / "ck" / "latest_checkpointed_iteration.txt").read_text() == "5"
    metrics = tmp_path / "ck" / "metrics.jsonl"  # the first run's default (under --save); the second appends
    second = run_torchrun(1, TINY_GPT + DROPOUT + ["--train-iters", "10", "--load", str(tmp_path / "ck"),
                                                   "--metrics-file", str(metrics)])
    assert_ok(second)
    assert "resumed from" in second.stdout
    ref, a, b = losses(straight.stdout), losses(first.stdout), losses(second.stdout)
    assert sorted(a) == [1, 2, 3, 4, 5] and sorted(b) == [6, 7, 8, 9, 10]
    for it in range(1, 11):
        assert (a | b)[it] == ref[it], f"iteration {it}: resumed {(a | b)[it]} != straight {ref[it]}"
    written = metric_records(metrics)
    assert sorted(written) == list(range(1, 11))
    for it, record in written.items():
        assert f"{record['lm loss']:.6E}" == f"{ref[it]:.6E}", f"iteration {it}"
    starts = [r["iteration"] for r in read_metrics(str(metrics)) if r.get("event") == "start"]
    assert starts == [0, 5]


def test_resume_at_another_layout(tmp_path):
    """Saved at TP=1, loaded at PP=2: the model and optimizer state reshard (RNG is layout-specific: no dropout)."""
    no_drop = ["--hidden-dropout", "0", "--attention-dropout", "0"]
    straight = run_torchrun(1, TINY_GPT + no_drop + ["--train-iters", "8"])
    assert_ok(straight)
    first = run_torchrun(1, TINY_GPT + no_drop + ["--train-iters", "8", "--save", str(tmp_path / "ck"),
                                                  "--save-interval", "4", "--exit-interval", "4"])
    assert_ok(first)
    second = run_torchrun(2, TINY_GPT + no_drop + ["--train-iters", "8", "--load", str(tmp_path / "ck"),
                                                   "--pipeline-model-parallel-size", "2"])
    assert_ok(second)
    ref, b = losses(straight.stdout), losses(second.stdout)
    for it in range(5, 9):
        assert b[it] == pytest.approx(ref[it], abs=1e-5)


def test_killed_save_leaves_previous_checkpoint(tmp_path):
    ck = tmp_path / "ck"
    # The same schedule in every run (--train-iters 6): a changed one is refused on --load.
    first = run_torchrun(1, TINY_GPT + DROPOUT + ["--train-iters", "6", "--exit-interval", "3", "--save", str(ck)])
    assert_ok(first)
    assert (ck / "latest_checkpointed_iteration.txt").read_text() == "3"
    # Second run saves at iteration 6; SIGKILL the whole process group as soon as the temp dir appears.
    cmd = [sys.executable, *(TINY_GPT + DROPOUT + ["--train-iters", "6", "--load", str(ck), "--save", str(ck),
                                                   "--save-interval", "6"])]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=cpu_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    tmp_dir = ck / "iter_0000006.tmp"
    deadline = time.time() + 300
    while not tmp_dir.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    seen = tmp_dir.exists()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if not seen:
        pytest.fail("the save never started (or finished before it could be interrupted)")
    assert (ck / "latest_checkpointed_iteration.txt").read_text() == "3"
    assert not (ck / "iter_0000006").exists()
    resumed = run_torchrun(1, TINY_GPT + DROPOUT + ["--train-iters", "6", "--load", str(ck)])
    assert_ok(resumed)
    assert "resumed from" in resumed.stdout and "at iteration 3" in resumed.stdout
    assert sorted(losses(resumed.stdout)) == [4, 5, 6]
