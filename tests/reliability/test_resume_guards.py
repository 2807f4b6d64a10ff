"""What --load and --save refuse, and the exits a cluster asks for.

* a checkpoint loaded into another model shape: one line naming the field and both values, exit status 2;
* a changed learning-rate schedule: one line naming both values, unless --override-opt_param-scheduler (the flags'
  schedule: the resumed lrs equal a straight run's with the new flags) or --use-checkpoint-opt_param-scheduler
  (the checkpoint's: equal to the first run's);
* one writer per --save: a live lock refuses, a dead process's lock is taken over with a warning and removed at
  exit; a run that does not resume from --save refuses to move its tracker backwards;
* --exit-signal-handler: SIGTERM saves the iteration reached and exits 0 (no final evaluation), and the run
  resumes from it.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

from tests.support import REPO_ROOT, cpu_env, run_python
from tests.training.gpt_cases import NO_DROPOUT, TINY_GPT, assert_ok, metric_records

BASE = TINY_GPT + NO_DROPOUT


def _refused(proc, *needles):
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _lrs(path):
    return {it: rec["lr"] for it, rec in metric_records(path).items()}


def test_shape_and_schedule_checks_on_load(tmp_path):
    ck = tmp_path / "ck"
    assert_ok(run_python(BASE + ["--train-iters", "8", "--exit-interval", "4", "--save", str(ck)], timeout=300))
    heads = run_python(BASE[:6] + ["2"] + BASE[7:] + ["--train-iters", "8", "--load", str(ck)], timeout=300)
    assert BASE[5:7] == ["--num-attention-heads", "4"]
    _refused(heads, "num_attention_heads", "4", "2", "--num-attention-heads")
    post = run_python(BASE + ["--train-iters", "8", "--load", str(ck), "--apply-residual-connection-post-layernorm"],
                      timeout=300)
    _refused(post, "apply_residual_connection_post_layernorm")
    longer = run_python(BASE + ["--train-iters", "12", "--load", str(ck)], timeout=300)
    _refused(longer, "lr_decay_steps", "--override-opt_param-scheduler", "--use-checkpoint-opt_param-scheduler")
    new_lr = run_python(BASE + ["--train-iters", "8", "--load", str(ck), "--lr", "2e-3"], timeout=300)
    _refused(new_lr, "max_lr", "0.001", "0.002")

    # --override-opt_param-scheduler: the flags' schedule from iteration 5 on (= a straight run with them).
    straight = tmp_path / "straight.jsonl"
    assert_ok(run_python(BASE + ["--train-iters", "12", "--lr", "2e-3", "--metrics-file", str(straight)], timeout=300))
    over = tmp_path / "override.jsonl"
    assert_ok(run_python(BASE + ["--train-iters", "12", "--lr", "2e-3", "--load", str(ck),
                                 "--override-opt_param-scheduler", "--metrics-file", str(over)], timeout=300))
    ref, got = _lrs(straight), _lrs(over)
    assert sorted(got) == list(range(5, 13))
    assert all(abs(got[i] - ref[i]) <= 1e-12 * ref[i] for i in got), (got, ref)
    # --use-checkpoint-opt_param-scheduler: the first run's schedule (lr 1e-3 over 8 iterations).
    first = tmp_path / "first.jsonl"
    assert_ok(run_python(BASE + ["--train-iters", "8", "--metrics-file", str(first)], timeout=300))
    keep = tmp_path / "keep.jsonl"
    assert_ok(run_python(BASE + ["--train-iters", "8", "--lr", "2e-3", "--load", str(ck),
                                 "--use-checkpoint-opt_param-scheduler", "--metrics-file", str(keep)], timeout=300))
    ref, got = _lrs(first), _lrs(keep)
    assert sorted(got) == list(range(5, 9)) and all(abs(got[i] - ref[i]) <= 1e-12 * ref[i] for i in got)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_one_writer_per_save_directory(tmp_path):
    ck = tmp_path / "ck"
    ck.mkdir()
    lock = ck / "writer.lock"
    lock.write_text(json.dumps({"host": os.uname().nodename, "pid": os.getpid(), "start": time.time()}))
    busy = run_python(BASE + ["--train-iters", "3", "--save", str(ck)], timeout=300)
    _refused(busy, "is in use by another run", f"pid {os.getpid()}", str(lock))
    assert not list(ck.glob("iter_*")) and lock.exists()

    lock.write_text(json.dumps({"host": os.uname().nodename, "pid": _dead_pid(), "start": time.time()}))
    taken = run_python(BASE + ["--train-iters", "3", "--save", str(ck)], timeout=300)
    assert_ok(taken)
    assert "taking over the lock" in taken.stdout + taken.stderr
    assert (ck / "latest_checkpointed_iteration.txt").read_text() == "3" and not lock.exists()

    backwards = run_python(BASE + ["--train-iters", "3", "--save", str(ck)], timeout=300)
    _refused(backwards, "already holds checkpoints up to iteration 3", "--load")
    assert (ck / "latest_checkpointed_iteration.txt").read_text() == "3" and not lock.exists()


def test_sigterm_saves_and_exits_cleanly(tmp_path):
    ck = tmp_path / "ck"
    cmd = [sys.executable, *BASE, "--train-iters", "100000", "--save", str(ck), "--exit-signal-handler",
           "--eval-iters", "2", "--eval-interval", "100000"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=cpu_env({"PYTHONUNBUFFERED": "1"}), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if re.search(r"iteration\s+3/", line):
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=300)
    out = "".join(seen) + rest
    assert proc.returncode == 0, out[-3000:]
    assert "SIGTERM received" in out and "validation (end of training)" not in out
    saved = int((ck / "latest_checkpointed_iteration.txt").read_text())
    assert saved >= 3 and f"exiting at iteration {saved}" in out
    resumed = run_python(BASE + ["--train-iters", "100000", "--load", str(ck), "--exit-interval", str(saved + 1),
                                 "--eval-iters", "2", "--eval-interval", "100000"], timeout=300)
    assert_ok(resumed)
    assert f"at iteration {saved}" in resumed.stdout
