"""A 1000-layer Llama-shaped DSLM GPT (RMSNorm, SwiGLU, RoPE, GQA, no biases, untied) trains 50 iterations on
real text on CPU: loss falls, no NaN; and examples/pretrain_llama_dslm.sh (upstream's Llama-3 flags) trains."""

import math
import os
import subprocess

import pytest

from tests.training.gpt_cases import assert_ok, losses
from tests.training.test_llama_parallel import _scheme_flags
from tests.support import REPO_ROOT, cpu_env, require_shared_data, run_python

LLAMA = ["--swiglu", "--normalization", "RMSNorm", "--position-embedding-type", "rope",
         "--group-query-attention", "--num-query-groups", "1", "--disable-bias-linear",
         "--untie-embeddings-and-output-weights"]


def _wiki(tmp_path, documents=1000):
    corpus = require_shared_data("corpus", "wiki-sample.jsonl")
    vocab = require_shared_data("vocab", "bert-base-uncased-vocab.txt")
    subset = tmp_path / "wiki.jsonl"
    with open(corpus) as src, open(subset, "w") as dst:
        for _, line in zip(range(documents), src):
            dst.write(line)
    prep = run_python(["tools/preprocess_data.py", "--input", str(subset), "--output-prefix", str(tmp_path / "wiki"),
                       "--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file", str(vocab), "--append-eod",
                       "--workers", "1"], timeout=600)
    assert_ok(prep)
    return tmp_path / "wiki_text_document", vocab


@pytest.mark.slow
def test_1000_layer_llama_dslm_gpt_trains(tmp_path):
    scheme = _scheme_flags("dslm")
    data, vocab = _wiki(tmp_path)
    proc = run_python([
        "pretrain_gpt.py", "--num-layers", "1000", "--hidden-size", "16", "--num-attention-heads", "2",
        "--seq-length", "16", "--max-position-embeddings", "16", "--micro-batch-size", "2",
        "--train-iters", "50", "--lr", "3e-3", "--lr-warmup-iters", "5", "--lr-decay-style", "constant",
        *LLAMA, *scheme, "--hidden-dropout", "0", "--attention-dropout", "0",
        "--data-path", str(data), "--split", "100,0,0", "--eval-iters", "0",
        "--tokenizer-type", "BertWordPieceLowerCase", "--vocab-file", str(vocab), "--log-interval", "1",
    ], timeout=900, env={"OMP_NUM_THREADS": "1"})
    assert_ok(proc)
    curve = losses(proc.stdout)
    assert sorted(curve) == list(range(1, 51)), proc.stdout[-3000:]
    assert all(math.isfinite(v) for v in curve.values())
    assert "number of nan iterations:   0" in proc.stdout
    first = sum(curve[i] for i in range(1, 6)) / 5
    last = sum(curve[i] for i in range(41, 51)) / 10
    print(f"1000-layer Llama-shaped DSLM GPT: mean loss iterations 1-5 {first:.3f}, 41-50 {last:.3f}")
    assert last < first - 0.5, f"loss did not fall: {first:.3f} -> {last:.3f}"


@pytest.mark.slow
def test_llama_example_script_trains(tmp_path):
    _scheme_flags("dslm")
    env = cpu_env({"ITERS": "20", "OUT": str(tmp_path / "out"), "OMP_NUM_THREADS": "1"})
    proc = subprocess.run(["bash", str(REPO_ROOT / "examples" / "pretrain_llama_dslm.sh"), "--log-interval", "1"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert_ok(proc)
    curve = losses(proc.stdout)
    assert sorted(curve) == list(range(1, 21)) and all(math.isfinite(v) for v in curve.values())
    assert curve[20] < curve[1]
    assert os.path.exists(tmp_path / "out" / "checkpoints" / "latest_checkpointed_iteration.txt")
