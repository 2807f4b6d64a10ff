"""The JSONL metrics file: one line per log interval and per evaluation with the console's numbers, written
by the last rank only, strict JSON, appended on resume; and the data order the loop resumes from."""

import json
import math
import re
import types

import pytest

from tests.support import run_torchrun
from tests.training.gpt_cases import NO_DROPOUT, TINY_GPT, assert_ok, losses

_EVAL = re.compile(r" validation( \(end of training\))? loss at iteration (\d+) \| "
                   r"lm loss value: ([0-9.E+-]+) \| lm loss PPL: ([0-9.E+-]+) \|")
_LR = re.compile(r"iteration\s+(\d+)/\s*\d+ \|.*?\| learning rate: ([0-9.E+-]+) \|")


def _strict_lines(path):
    def no_constants(name):
        raise AssertionError(f"non-strict JSON constant {name} in {path}")

    return [json.loads(line, parse_constant=no_constants) for line in path.read_text().splitlines()]


@pytest.mark.dist
def test_pipeline_run_writes_the_console_values_once_per_interval(tmp_path):
    """PP=2: rank 0 has no losses, so a second writer would show up as a duplicate or empty line."""
    tb = tmp_path / "tb"
    proc = run_torchrun(2, TINY_GPT + NO_DROPOUT + [
        "--train-iters", "5", "--log-interval", "2", "--eval-iters", "1", "--eval-interval", "2",
        "--pipeline-model-parallel-size", "2", "--tensorboard-dir", str(tb)])
    assert_ok(proc)
    records = _strict_lines(tb / "metrics.jsonl")  # the default path under --tensorboard-dir
    assert [r.get("event") for r in records].count("start") == 1
    assert records[0]["event"] == "start" and records[0]["iteration"] == 0
    train = [r for r in records if r.get("split") == "train"]
    console, console_lr = losses(proc.stdout), {int(i): float(v) for i, v in _LR.findall(proc.stdout)}
    assert [r["iteration"] for r in train] == sorted(console) == [2, 4, 5]  # intervals 2, 4 and the last one
    for r in train:
        it = r["iteration"]
        assert f"{r['lm loss']:.6E}" == f"{console[it]:.6E}", f"iteration {it}"
        assert f"{r['lr']:.6E}" == f"{console_lr[it]:.6E}"
        assert {"grad_norm", "tokens_per_s", "elapsed_s", "skipped", "nan_iterations"} <= set(r)
        assert r["grad_norm"] > 0 and r["tokens_per_s"] > 0 and r["skipped"] == 0 and r["nan_iterations"] == 0
        assert r["consumed_samples"] == 8 * it
    assert train[-1]["lm loss"] < train[0]["lm loss"]
    evals = [r for r in records if r.get("split") == "validation"]
    seen = [(int(m.group(2)), bool(m.group(1)), float(m.group(3)), float(m.group(4)))
            for m in _EVAL.finditer(proc.stdout)]
    assert [(r["iteration"], r["end_of_training"]) for r in evals] == [(it, final) for it, final, _, _ in seen]
    assert [r["iteration"] for r in evals] == [2, 4, 5] and evals[-1]["end_of_training"]
    for r, (_, _, loss, ppl) in zip(evals, seen):
        assert f"{r['lm loss']:.6E}" == f"{loss:.6E}" and f"{r['lm loss PPL']:.6E}" == f"{ppl:.6E}"
        assert r["lm loss PPL"] == pytest.approx(math.exp(r["lm loss"]))


def _args(tmp_path, **kw):
    base = dict(log_interval=2, train_iters=3, global_batch_size=4, seq_length=8, fp16=False,
                tensorboard_dir=None, save=str(tmp_path / "ck"), metrics_file=None, iteration=0, world_size=1,
                init_scheme="dslm", embedding_corr=0.25)
    return types.SimpleNamespace(**{**base, **kw})


def test_metrics_path_defaults():
    from megatron.training.metrics import metrics_path

    ns = types.SimpleNamespace
    assert metrics_path(ns(metrics_file="m.jsonl", tensorboard_dir="tb", save="ck")) == "m.jsonl"
    assert metrics_path(ns(metrics_file=None, tensorboard_dir="tb", save="ck")) == "tb/metrics.jsonl"
    assert metrics_path(ns(metrics_file=None, tensorboard_dir=None, save="ck")) == "ck/metrics.jsonl"
    assert metrics_path(ns(metrics_file=None, tensorboard_dir=None, save=None)) is None


def test_metrics_flag_parses():
    from megatron.training.training import parse_args

    assert parse_args(argv=["--metrics-file", "x.jsonl"]).metrics_file == "x.jsonl"
    assert parse_args(argv=[]).metrics_file is None


def test_logger_writes_window_means_as_strict_json_and_appends_on_resume(tmp_path, capsys):
    from megatron.training.metrics import TrainingLogger, read_metrics

    logger = TrainingLogger(_args(tmp_path))
    logger.record(1, {"lm loss": 2.0}, False, 1.0, 1e-3)
    logger.maybe_print(1, 1e-3, 1.0)  # not a log interval
    logger.record(2, {"lm loss": 4.0}, True, float("inf"), 2e-3)
    logger.maybe_print(2, 2e-3, 1.0)
    logger.record(3, {"lm loss": float("nan")}, False, 0.5, 3e-3)
    logger.maybe_print(3, 3e-3, 1.0)  # the last iteration is always logged
    logger.log_eval(3, {"lm loss": 1.0}, end_of_training=True)
    path = tmp_path / "ck" / "metrics.jsonl"
    assert len(path.read_text().splitlines()) == 4  # flushed line by line, before close
    logger.close()
    out = capsys.readouterr().out
    assert "lm loss: 3.000000E+00" in out and "number of nan iterations:   1" in out

    start, second, third, final = _strict_lines(path)
    assert start["event"] == "start" and start["embedding_corr"] == 0.25 and start["iteration"] == 0
    assert second["split"] == "train" and second["iteration"] == 2
    assert second["lm loss"] == 3.0 and second["skipped"] == 1 and second["lr"] == 2e-3
    assert second["grad_norm"] is None  # inf is stored as null
    assert "lm loss" not in third and third["nan_iterations"] == 1 and third["grad_norm"] == 0.5
    assert final == {"split": "validation", "iteration": 3, "end_of_training": True, "lm loss": 1.0,
                     "lm loss PPL": pytest.approx(math.e)}

    resumed = TrainingLogger(_args(tmp_path, iteration=3, train_iters=4))
    resumed.record(4, {"lm loss": 0.5}, False, 0.1, 1e-4)
    resumed.maybe_print(4, 1e-4, 1.0)
    resumed.close()
    assert [r["iteration"] for r in read_metrics(str(path), split="train")] == [2, 3, 4]
    assert [r["iteration"] for r in read_metrics(str(path)) if r.get("event") == "start"] == [0, 3]


def test_no_metrics_file_without_a_folder(tmp_path, monkeypatch):
    from megatron.training.metrics import TrainingLogger

    monkeypatch.chdir(tmp_path)
    logger = TrainingLogger(_args(tmp_path, save=None))
    assert logger.metrics is None
    logger.record(2, {"lm loss": 1.0}, False, 1.0, 1e-3)
    logger.maybe_print(2, 1e-3, 1.0)
    logger.close()
    assert list(tmp_path.iterdir()) == []


def test_read_metrics_skips_a_line_cut_short(tmp_path):
    from megatron.training.metrics import MetricsWriter, read_metrics

    path = tmp_path / "m.jsonl"
    writer = MetricsWriter(str(path))
    writer.write({"split": "train", "iteration": 1, "lm loss": 2.0})
    writer.close()
    with open(path, "a") as f:
        f.write('{"split": "train", "iter')
    assert read_metrics(str(path)) == [{"split": "train", "iteration": 1, "lm loss": 2.0}]
    assert read_metrics(str(tmp_path / "missing.jsonl")) == []


def test_sampler_resumes_where_it_stopped_and_ranks_split_each_batch():
    from megatron.training.data_iterators import PretrainingSampler, num_samples_per_split

    per_rank = [list(PretrainingSampler(40, 0, 2, rank, 2)) for rank in (0, 1)]
    assert len(per_rank[0]) == len(PretrainingSampler(40, 0, 2, 0, 2)) == 10
    for a, b in zip(*per_rank):
        assert set(a).isdisjoint(b) and sorted(a + b) == list(range(a[0], a[0] + 4))
    assert list(PretrainingSampler(40, 12, 2, 0, 2)) == per_rank[0][3:]
    args = types.SimpleNamespace(train_iters=10, global_batch_size=8, eval_interval=5, eval_iters=2)
    assert num_samples_per_split(args) == [80, (10 // 5 + 1) * 2 * 8, 0]
    args.eval_iters = 0
    assert num_samples_per_split(args)[1] == 0
