"""A 1000-layer, 64-wide DSLM GPT trains 50 iterations on real text on CPU: loss falls, no NaN."""

import math

import pytest

from tests.training.gpt_cases import assert_ok, losses
from tests.support import REPO_ROOT, require_shared_data, run_python


@pytest.mark.slow
def test_1000_layer_dslm_gpt_trains(tmp_path):
    corpus = require_shared_data("corpus", "wiki-sample.jsonl")
    vocab = require_shared_data("vocab", "bert-base-uncased-vocab.txt")
    subset = tmp_path / "wiki.jsonl"
    with open(corpus) as src, open(subset, "w") as dst:
        for i, line in zip(range(2000), src):
            dst.write(line)
    prep = run_python(["tools/preprocess_data.py", "--input", str(subset), "--output-prefix", str(tmp_path / "wiki"),
                       "--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file", str(vocab), "--append-eod",
                       "--workers", "1"], timeout=600)
    assert_ok(prep)
    proc = run_python([
        "pretrain_gpt.py", "--num-layers", "1000", "--hidden-size", "64", "--num-attention-heads", "2",
        "--seq-length", "64", "--max-position-embeddings", "64", "--micro-batch-size", "4",
        "--train-iters", "50", "--lr", "1e-3", "--lr-warmup-iters", "5", "--lr-decay-style", "constant",
        "--init-scheme", "dslm", "--hidden-dropout", "0.1", "--attention-dropout", "0.1",
        "--data-path", str(tmp_path / "wiki_text_document"), "--split", "100,0,0", "--eval-iters", "0",
        "--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file", str(vocab), "--log-interval", "1",
    ], timeout=3000, env={"OMP_NUM_THREADS": "1"})
    assert_ok(proc)
    curve = losses(proc.stdout)
    assert sorted(curve) == list(range(1, 51)), proc.stdout[-3000:]
    assert all(math.isfinite(v) for v in curve.values())
    assert "number of nan iterations:   0" in proc.stdout
    first = sum(curve[i] for i in range(1, 6)) / 5
    last = sum(curve[i] for i in range(41, 51)) / 10
    print(f"1000-layer DSLM GPT: mean loss iterations 1-5 {first:.3f}, 41-50 {last:.3f}")
    assert last < first - 1.0, f"loss did not fall: {first:.3f} -> {last:.3f}"
