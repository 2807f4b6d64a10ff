"""pretrain_bert.py at TP=2 and PP=2 reproduces the TP=1 losses (fp32, CPU, cpu init, no dropout)."""

import re

import pytest

from tests.support import REPO_ROOT, run_torchrun

ITERS = 5


def _args(prefix, vocab, tmp_path, extra):
    return [
        str(REPO_ROOT / "pretrain_bert.py"),
        "--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4", "--seq-length", "64",
        "--max-position-embeddings", "64", "--micro-batch-size", "2", "--global-batch-size", "4",
        "--train-iters", str(ITERS), "--lr", "1e-3", "--lr-warmup-iters", "1", "--data-path", prefix,
        "--split", "1,0,0", "--eval-iters", "0", "--vocab-file", vocab, "--tokenizer-type",
        "BertWordPieceLowerCase", "--use-cpu-initialization", "--log-interval", "1", "--hidden-dropout", "0",
        "--attention-dropout", "0", "--data-cache-path", str(tmp_path / "cache"), "--seed", "7", *extra,
    ]


def _losses(proc):
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    rows = {}
    for line in out.splitlines():
        m = re.search(r"iteration\s+(\d+)/", line)
        if m and "lm loss:" in line:
            rows[int(m.group(1))] = {k: float(v) for k, v in re.findall(r"(lm loss|sop loss): ([0-9.E+-]+)", line)}
    assert sorted(rows) == list(range(1, ITERS + 1)), out[-4000:]
    return rows


@pytest.fixture(scope="module")
def tp1_losses(bert_corpus, tmp_path_factory):
    prefix, vocab = bert_corpus
    tmp = tmp_path_factory.mktemp("tp1")
    # Padded vocab 30720 in every run: 256 x TP1 here, 128 x TP2 below (layout-independent weights).
    return _losses(run_torchrun(1, _args(prefix, vocab, tmp, ["--make-vocab-size-divisible-by", "256"])))


def _assert_equal(a, b):
    for it in a:
        for key in ("lm loss", "sop loss"):
            assert abs(a[it][key] - b[it][key]) <= 1e-5, (it, key, a[it], b[it])


@pytest.mark.dist
def test_tp2_matches_tp1(bert_corpus, tp1_losses, tmp_path):
    prefix, vocab = bert_corpus
    tp2 = _losses(run_torchrun(2, _args(prefix, vocab, tmp_path, [
        "--tensor-model-parallel-size", "2", "--make-vocab-size-divisible-by", "128"])))
    _assert_equal(tp1_losses, tp2)
    assert tp1_losses[ITERS]["lm loss"] < tp1_losses[1]["lm loss"]  # it trains


@pytest.mark.dist
def test_pp2_matches_tp1(bert_corpus, tp1_losses, tmp_path):
    prefix, vocab = bert_corpus
    pp2 = _losses(run_torchrun(2, _args(prefix, vocab, tmp_path, [
        "--pipeline-model-parallel-size", "2", "--make-vocab-size-divisible-by", "256"])))
    _assert_equal(tp1_losses, pp2)
