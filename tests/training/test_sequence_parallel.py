"""--sequence-parallel at TP=2 trains the TP1·PP1 model: same losses (GPT and BERT) and same per-layer moments.

Dropout is off: under sequence parallelism megatron-core draws the hidden dropout of each [s/TP, b, h] slice
from that TP rank's own RNG stream, so masks (not the arithmetic) differ from the one-process run.
"""

import json
import re

import pytest

from tests.bert.conftest import bert_corpus  # noqa: F401  (fixture: real-data BERT corpus, skips without it)
from tests.support import REPO_ROOT, run_torchrun
from tests.training.gpt_cases import NO_DROPOUT, assert_ok, losses

SMALL_GPT = [
    "pretrain_gpt.py", "--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4",
    "--seq-length", "16", "--max-position-embeddings", "16", "--micro-batch-size", "2", "--global-batch-size", "8",
    "--train-iters", "3", "--lr", "1e-3", "--mock-data", "--vocab-size", "255", "--log-interval", "1",
    "--eval-iters", "0", "--use-cpu-initialization", "--seed", "7", *NO_DROPOUT,
]
SP = ["--tensor-model-parallel-size", "2", "--sequence-parallel"]


def _moments(path):
    return {(r["iteration"], r["layer"]): r for r in map(json.loads, open(path, encoding="utf-8"))}


def _assert_losses_equal(ref, got):
    assert sorted(got) == sorted(ref) == [1, 2, 3]
    for it in ref:
        assert got[it] == pytest.approx(ref[it], abs=1e-5), f"iteration {it}: {got[it]} vs {ref[it]}"
    assert ref[3] < ref[1]  # the losses move: equal constant curves would prove nothing
    print("max |loss difference|:", max(abs(got[it] - ref[it]) for it in ref))


@pytest.mark.dist
def test_gpt_sequence_parallel_matches_tp1(tmp_path):
    """Losses within 1e-5 and moments (gathered over the TP group under SP) within 1e-4 relative of TP1."""
    moments = ["--log-moments-interval", "1", "--moments-file"]
    ref_proc = run_torchrun(1, SMALL_GPT + moments + [str(tmp_path / "tp1.jsonl")], timeout=600)
    assert_ok(ref_proc)
    proc = run_torchrun(2, SMALL_GPT + SP + moments + [str(tmp_path / "sp.jsonl")], timeout=600)
    assert_ok(proc)
    _assert_losses_equal(losses(ref_proc.stdout), losses(proc.stdout))
    ref, got = _moments(tmp_path / "tp1.jsonl"), _moments(tmp_path / "sp.jsonl")
    assert sorted(got) == sorted(ref) and len(ref) == 3 * 3  # 3 iterations x (embedding + 2 layers)
    worst = 0.0
    for key, rec in ref.items():
        assert got[key].keys() == rec.keys(), key
        for name, value in rec.items():
            assert got[key][name] == pytest.approx(value, rel=1e-4, abs=1e-9), (key, name, got[key][name], value)
            worst = max(worst, abs(got[key][name] - value) / max(abs(value), 1e-12))
    print("max relative moment difference:", worst)


def _bert_args(prefix, vocab, tmp_path, extra):
    return [
        str(REPO_ROOT / "pretrain_bert.py"),
        "--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4", "--seq-length", "16",
        "--max-position-embeddings", "16", "--micro-batch-size", "2", "--global-batch-size", "4",
        "--train-iters", "3", "--lr", "1e-3", "--data-path", prefix, "--split", "1,0,0", "--eval-iters", "0",
        "--vocab-file", vocab, "--tokenizer-type", "BertWordPieceLowerCase", "--use-cpu-initialization",
        "--log-interval", "1", *NO_DROPOUT, "--data-cache-path", str(tmp_path / "cache"), "--seed", "7", *extra,
    ]


def _bert_losses(proc):
    assert_ok(proc)
    rows = {}
    for line in proc.stdout.splitlines():
        m = re.search(r"iteration\s+(\d+)/", line)
        if m and "lm loss:" in line:
            rows[int(m.group(1))] = dict(re.findall(r"(lm loss|sop loss): ([0-9.E+-]+)", line))
    return rows


@pytest.mark.dist
def test_bert_sequence_parallel_matches_tp1(bert_corpus, tmp_path):  # noqa: F811
    """BERT (masked-positions LM head falls back to the stock head under SP): lm and sop losses within 1e-5."""
    prefix, vocab = bert_corpus
    # Padded vocab 30720 in both runs: 256 x TP1, 128 x TP2 (layout-independent weights).
    ref = _bert_losses(run_torchrun(1, _bert_args(prefix, vocab, tmp_path, ["--make-vocab-size-divisible-by", "256"])))
    got = _bert_losses(run_torchrun(2, _bert_args(prefix, vocab, tmp_path,
                                                  ["--make-vocab-size-divisible-by", "128", *SP])))
    assert sorted(ref) == sorted(got) == [1, 2, 3]
    for it in ref:
        for key in ("lm loss", "sop loss"):
            assert abs(float(got[it][key]) - float(ref[it][key])) <= 1e-5, (it, key, ref[it], got[it])
    assert float(ref[3]["lm loss"]) < float(ref[1]["lm loss"])
    print("max |loss difference|:", max(abs(float(got[it][k]) - float(ref[it][k])) for it in ref for k in ref[it]))


def test_sequence_parallel_off_at_tp1(capsys):
    """Upstream: at TP=1 the flag is turned off with a warning, not refused."""
    from megatron.training.config import build_parser
    from megatron.training.validate import validate_args

    args = build_parser().parse_args(SMALL_GPT[1:] + ["--sequence-parallel"])
    validate_args(args, world_size=1)
    assert args.sequence_parallel is False
    assert "disabling sequence parallelism" in capsys.readouterr().out
