"""--log-moments-interval records the init profile (iteration 0) and leaves the training trajectory unchanged.

Iteration k's moments are the forward/backward of the model after k updates: iteration 0 must equal a freshly
built model's first-batch moments (a separate process, no training loop), and a run resumed from the
iteration-2 checkpoint must log the same iteration-2 moments as the straight run.
"""

from __future__ import annotations

import json
import math

import pytest

from tests.support import REPO_ROOT, run_python
from tests.training.gpt_cases import assert_ok, metric_records

# dropout on: the hooks must not touch the RNG stream either
RUN = ["pretrain_gpt.py", "--num-layers", "3", "--hidden-size", "32", "--num-attention-heads", "4",
       "--seq-length", "16", "--max-position-embeddings", "16", "--micro-batch-size", "2",
       "--global-batch-size", "4", "--lr", "5e-3", "--lr-warmup-iters", "1", "--mock-data", "--vocab-size", "127",
       "--log-interval", "1", "--eval-iters", "0", "--use-cpu-initialization", "--seed", "11",
       "--init-scheme", "dslm"]
FRESH = REPO_ROOT / "tests" / "training" / "scripts" / "fresh_model_moments.py"


def _moments(path):
    out = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        out[(rec["iteration"], rec["layer"])] = rec
    return out


def _losses(path):
    return {it: r["lm loss"] for it, r in metric_records(path).items()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("moments0")
    plain = run_python(RUN + ["--train-iters", "5", "--metrics-file", str(tmp / "plain.jsonl")], timeout=300)
    assert_ok(plain)
    logged = run_python(RUN + ["--train-iters", "5", "--metrics-file", str(tmp / "logged.jsonl"),
                               "--log-moments-interval", "2", "--moments-file", str(tmp / "moments.jsonl")],
                        timeout=300)
    assert_ok(logged)
    fresh = run_python([str(FRESH), *RUN[1:], "--train-iters", "5", "--moments-file", str(tmp / "fresh.jsonl")],
                       timeout=300)
    assert_ok(fresh)
    return {"tmp": tmp}


def test_moment_logging_leaves_the_losses_unchanged(runs):
    plain, logged = _losses(runs["tmp"] / "plain.jsonl"), _losses(runs["tmp"] / "logged.jsonl")
    assert sorted(plain) == sorted(logged) == [1, 2, 3, 4, 5]
    assert len(set(plain.values())) > 1  # the losses move: equal constant curves would prove nothing
    assert logged == plain  # bitwise: hooks only read detached copies


def test_iteration_zero_is_a_fresh_models_first_batch(runs):
    moments = _moments(runs["tmp"] / "moments.jsonl")
    assert sorted({it for it, _ in moments}) == [0, 2, 4]  # step 6 (iteration 6) does not run
    assert sorted(layer for it, layer in moments if it == 0) == [0, 1, 2, 3]
    fresh = _moments(runs["tmp"] / "fresh.jsonl")
    assert sorted(fresh) == sorted(k for k in moments if k[0] == 0)
    for key, ref in fresh.items():
        got = moments[key]
        assert got.keys() == ref.keys()
        for field, value in ref.items():
            assert got[field] == pytest.approx(value, rel=1e-6, abs=1e-12), (key, field)
    # and the profile moves once training starts: iteration 4 is not iteration 0
    top = max(layer for _, layer in fresh)
    assert not math.isclose(moments[(4, top)]["grad_var"], moments[(0, top)]["grad_var"], rel_tol=1e-6)


@pytest.mark.slow
def test_resumed_run_logs_the_same_iteration(runs):
    """Iteration 2 = the model after 2 updates, whether those were in this process or loaded from a checkpoint."""
    tmp = runs["tmp"]
    assert_ok(run_python(RUN + ["--train-iters", "2", "--save", str(tmp / "ckpt"), "--save-interval", "2",
                                "--metrics-file", str(tmp / "first_two.jsonl")], timeout=300))
    # --train-iters 2 -> 3 changes the schedule's length: keep the checkpoint's, as before the load checks
    assert_ok(run_python(RUN + ["--train-iters", "3", "--load", str(tmp / "ckpt"), "--use-checkpoint-opt_param-scheduler",
                                "--metrics-file", str(tmp / "resumed_metrics.jsonl"),
                                "--log-moments-interval", "2", "--moments-file", str(tmp / "resumed.jsonl")],
                         timeout=300))
    straight, resumed = _moments(tmp / "moments.jsonl"), _moments(tmp / "resumed.jsonl")
    assert sorted(resumed) == [(2, layer) for layer in range(4)]
    for key, ref in resumed.items():
        for field, value in ref.items():
            assert straight[key][field] == pytest.approx(value, rel=1e-5, abs=1e-12), (key, field)
