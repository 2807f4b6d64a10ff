"""tools/generate.py on a GPT trained 3 steps with a real (byte-level BPE) tokenizer on a tiny indexed corpus.

Scores equal a hand computation (the model's forward on manual windows, F.cross_entropy), greedy generation
with and without the KV cache equals a hand argmax loop, seeded sampling equals a hand multinomial loop, bad
input gives one ``error:`` line and exit status 2; a TP2-saved checkpoint scores as the TP1 one (slow).
The tool runs in a child process (tests/tools/scripts/generate_checks.py): loading a checkpoint puts a process
into megatron's CPU mode for good.
"""

import json
import math
import random
import re

import pytest
import torch

from tests.support import REPO_ROOT, TINY_TEXTS, load_tool, run_python, run_torchrun, write_vocab
from tests.training.gpt_cases import assert_ok

CHECKS = REPO_ROOT / "tests" / "tools" / "scripts" / "generate_checks.py"
_SCORE = re.compile(r"^score: nll=(\S+) ppl=(\S+) tokens=(\d+) windows=(\d+)$")

# 352 BPE tokens pad to 384 rows at TP1 (multiple of 64) and at TP2 (multiple of 128): the same model either way.
VOCAB = 352


def _words():
    return " ".join(TINY_TEXTS).split()


def _train_argv(tmp, ck):
    return ["pretrain_gpt.py", "--num-layers", "2", "--hidden-size", "32", "--num-attention-heads", "4",
            "--seq-length", "32", "--max-position-embeddings", "64", "--micro-batch-size", "2",
            "--global-batch-size", "4", "--lr", "5e-3", "--train-iters", "3", "--log-interval", "1",
            "--eval-iters", "0", "--use-cpu-initialization", "--seed", "7", "--hidden-dropout", "0",
            "--attention-dropout", "0", "--data-path", str(tmp / "corpus_text_document"), "--split", "100,0,0",
            "--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", str(tmp / "bpe" / "vocab.json"),
            "--merge-file", str(tmp / "bpe" / "merges.txt"), "--make-vocab-size-divisible-by", "64",
            "--num-workers", "0", "--save", str(ck)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Tokenizer files, corpus, a 3-step TP1 checkpoint, and the files to score."""
    from tokenizers import ByteLevelBPETokenizer

    tmp = tmp_path_factory.mktemp("generate")
    (tmp / "bpe").mkdir()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(TINY_TEXTS * 5, vocab_size=VOCAB, min_frequency=1, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    bpe.save_model(str(tmp / "bpe"))
    rng = random.Random(0)
    words = _words()
    with open(tmp / "corpus.jsonl", "w") as f:
        for _ in range(60):
            f.write(json.dumps({"text": " ".join(rng.choice(words) for _ in range(rng.randint(20, 80)))}) + "\n")
    prep = load_tool("preprocess_data")
    assert prep.main(["--input", str(tmp / "corpus.jsonl"), "--output-prefix", str(tmp / "corpus"),
                      "--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", str(tmp / "bpe" / "vocab.json"),
                      "--merge-file", str(tmp / "bpe" / "merges.txt"), "--append-eod", "--workers", "1"]) == 0
    proc = run_python(_train_argv(tmp, tmp / "ck"), timeout=600)
    assert_ok(proc)
    # Documents to score: long ones (several 16-token windows, a shorter last one), short ones, an empty one.
    docs = [" ".join(rng.choice(words) for _ in range(n)) for n in (60, 25, 3, 1)] + TINY_TEXTS[:2] + [""]
    with open(tmp / "docs.jsonl", "w") as f:
        f.writelines(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs))
    (tmp / "text.txt").write_text(" ".join(TINY_TEXTS) + "\n" + " ".join(TINY_TEXTS[::-1]), encoding="utf-8")
    return tmp


def _run_checks(mode, tmp, out, *flags):
    proc = run_python([str(CHECKS), mode, "--docs", str(tmp / "docs.jsonl"), "--work", str(tmp), "--out", str(out),
                       *flags], timeout=600)
    assert_ok(proc)
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def checks(trained):
    tmp = trained
    return _run_checks("gpt", tmp, tmp / "checks.json", "--load", str(tmp / "ck"),
                       "--vocab-file", str(tmp / "bpe" / "vocab.json"), "--merge-file", str(tmp / "bpe" / "merges.txt"),
                       "--text", str(tmp / "text.txt"))


def _score(run):
    assert run["rc"] == 0, run["stderr"][-3000:]
    lines = run["stdout"].splitlines()
    assert len(lines) == 1, lines
    m = _SCORE.match(lines[0])
    assert m, lines[0]
    return float(m.group(1)), float(m.group(2)), int(m.group(3)), int(m.group(4))


def _jsonl(run):
    assert run["rc"] == 0, run["stderr"][-3000:]
    return [json.loads(line) for line in run["stdout"].splitlines()]


def test_model_is_the_trained_checkpoint(checks):
    """The references below use weights read from the checkpoint (not a fresh init), with a causal forward."""
    assert checks["embedding_vs_stored"] == 0.0
    assert checks["embedding_vs_fresh_init"] > 1e-3
    assert checks["causal_prefix_diff"] < 1e-5
    assert checks["padded_vocab_size"] == 384 and checks["vocab_size"] == VOCAB


@pytest.mark.parametrize("run,ref", [("score_docs", "manual_docs"), ("score_text", "manual_text")])
def test_score_matches_manual_windows(checks, run, ref):
    nll, ppl, tokens, windows = _score(checks[run])
    want = checks[ref]
    assert (tokens, windows) == (want["tokens"], want["windows"])
    assert abs(nll - want["nll"]) < 1e-5, (nll, want["nll"])
    assert ppl == pytest.approx(math.exp(want["nll"]), rel=1e-5)
    assert windows > 2  # several windows per long document, so the window cut is exercised


def _close(a, b, tol=1e-5):
    return len(a) == len(b) and all(abs(x - y) < tol for x, y in zip(a, b))


def test_greedy_matches_argmax_loop_with_and_without_cache(checks):
    for run in ("greedy_cache", "greedy_no_cache"):
        rows = _jsonl(checks[run])
        assert [r["prompt_tokens"] for r in rows] == checks["prompt_ids"]
        assert [r["tokens"] for r in rows] == checks["manual_greedy"], run
        assert [r["continuation"] for r in rows] == checks["decoded_greedy"]
        for row, want in zip(rows, checks["manual_greedy_logprobs"]):
            assert _close(row["logprobs"], want), (run, row["logprobs"], want)


def test_cache_equals_full_recompute_when_the_context_matters(checks):
    """On noised weights (peaked, context-dependent predictions) cached and uncached sampling give the hand
    loop's tokens and log-probabilities."""
    tokens, logps = checks["noisy_manual"]
    assert len(set(tokens)) > 3 and max(logps) - min(logps) > 1.0
    for run in ("noisy_cache", "noisy_no_cache"):
        assert checks[run][0] == tokens, run
        assert _close(checks[run][1], logps), run


def test_seeded_sampling_matches_multinomial_loop(checks):
    (row,) = _jsonl(checks["sample"])
    assert row["tokens"] == checks["manual_sample"]
    assert _close(row["logprobs"], checks["manual_sample_logprobs"])
    (top1,) = _jsonl(checks["sample_top_k1"])
    assert top1["tokens"] == checks["manual_greedy"][0]  # top-k 1 leaves only the argmax


def _one_error_line(result, message):
    assert result["rc"] == 2
    assert result["stdout"] == ""
    errors = [line for line in result["stderr"].splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result["stderr"][-2000:]


@pytest.mark.parametrize("run,message", [("empty_file", "is empty"), ("no_tracker", "no checkpoint under"),
                                         ("too_long", "learned positions")])
def test_bad_input_one_error_line_exit_2(checks, run, message):
    _one_error_line(checks[run], message)


@pytest.mark.slow
def test_bert_checkpoint_is_refused(tmp_path):
    (tmp_path / "docs.jsonl").write_text(json.dumps({"text": "the cat sat"}) + "\n")
    res = _run_checks("bert", tmp_path, tmp_path / "bert.json", "--bert-vocab", str(write_vocab(tmp_path)))
    _one_error_line(res["bert"], "BERT checkpoint")


def test_missing_checkpoint_from_the_command_line(tmp_path):
    proc = run_python(["tools/generate.py", "--load", str(tmp_path / "absent"), "--prompt", "hi"], timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"error: --load {tmp_path / 'absent'}: no such directory"]


def test_filtered_logits_keep_the_right_tokens():
    """top-k keeps the k largest, top-p the smallest most-likely set reaching p (closed forms on 5 logits)."""
    from megatron.training.generation import Sampling, filtered_logits

    probs = torch.tensor([0.05, 0.4, 0.1, 0.3, 0.15])
    logits = probs.log()
    kept = lambda s: sorted(torch.nonzero(torch.isfinite(filtered_logits(logits, s))).flatten().tolist())
    assert kept(Sampling(top_k=2)) == [1, 3]
    assert kept(Sampling(top_p=0.4)) == [1]
    assert kept(Sampling(top_p=0.69)) == [1, 3]
    assert kept(Sampling(top_p=0.71)) == [1, 3, 4]
    assert kept(Sampling(top_p=1.0)) == [0, 1, 2, 3, 4]
    out = filtered_logits(logits, Sampling(temperature=0.5))
    assert torch.allclose(torch.softmax(out, -1), probs ** 2 / (probs ** 2).sum())


@pytest.mark.slow
@pytest.mark.dist
def test_tp2_checkpoint_scores_as_tp1(trained, checks, tmp_path):
    proc = run_torchrun(2, _train_argv(trained, tmp_path / "ck_tp2") + ["--tensor-model-parallel-size", "2"],
                        timeout=900)
    assert_ok(proc)
    score = run_python(["tools/generate.py", "--load", str(tmp_path / "ck_tp2"), "--score",
                        str(trained / "docs.jsonl"), "--seq-length", "16"], timeout=600)
    assert score.returncode == 0, score.stderr[-3000:]
    got = _score({"rc": 0, "stdout": score.stdout, "stderr": score.stderr})
    ref = _score(checks["score_docs"])
    assert got[2:] == ref[2:]
    assert abs(got[0] - ref[0]) < 1e-5, (got[0], ref[0])
