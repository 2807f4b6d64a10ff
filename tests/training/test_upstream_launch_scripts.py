"""Argument lists of upstream Megatron-LM's public launch scripts, checked with ``--dry-run`` (no process group,
model or data; dummy paths): every flag is honoured or refused at start-up in one line that names it and says why
(exit 2), and with the refused flags taken out the script's configuration validates (exit 0).

Lists written from upstream's ``examples/llama/train_llama3_8b_h100_fp8.sh`` (mock-data branch),
``examples/gpt3/train_gpt3_175b_distributed.sh`` and ``examples/bert/train_bert_340m_distributed.sh``, values as
there.
"""

from __future__ import annotations

import re

import pytest

from tests.support import REPO_ROOT, run_python

LLAMA3_8B_FP8 = [
    "--use-mcore-models", "--num-layers", "32", "--hidden-size", "4096", "--ffn-hidden-size", "14336",
    "--num-attention-heads", "32", "--group-query-attention", "--num-query-groups", "8", "--kv-channels", "128",
    "--seq-length", "8192", "--max-position-embeddings", "8192", "--position-embedding-type", "rope",
    "--rotary-base", "1000000", "--rotary-percent", "1.0", "--attention-dropout", "0.0", "--hidden-dropout", "0.0",
    "--swiglu", "--init-method-std", "0.0134", "--attention-backend", "fused", "--apply-layernorm-1p",
    "--untie-embeddings-and-output-weights", "--disable-bias-linear",
    "--micro-batch-size", "1", "--global-batch-size", "128", "--train-samples", "1953125000",
    "--lr-decay-samples", "1949218748", "--lr-warmup-samples", "3906252", "--lr", "0.00015", "--min-lr", "0.00001",
    "--decoupled-lr", "5.0e-4", "--decoupled-min-lr", "4.5e-5", "--lr-decay-style", "cosine", "--clip-grad", "1.0",
    "--weight-decay", "0.1", "--adam-beta1", "0.9", "--adam-beta2", "0.95", "--bf16", "--grad-reduce-in-bf16",
    "--cross-entropy-loss-fusion", "--calculate-per-token-loss", "--manual-gc", "--empty-unused-memory-level", "1",
    "--exit-duration-in-mins", "235",
    "--fp8-format", "hybrid", "--fp8-amax-history-len", "1024", "--fp8-amax-compute-algo", "max", "--fp8-param-gather",
    "--tensor-model-parallel-size", "1", "--context-parallel-size", "1", "--sequence-parallel",
    "--use-distributed-optimizer", "--overlap-grad-reduce", "--overlap-param-gather",
    "--mock-data", "--tokenizer-type", "NullTokenizer", "--vocab-size", "128256", "--data-cache-path", "CACHE",
    "--tiktoken-pattern", "v2", "--split", "'99,1,0'", "--no-create-attention-mask-in-dataloader",
    "--no-mmap-bin-files", "--num-workers", "1",
    "--log-interval", "1", "--eval-iters", "32", "--eval-interval", "100", "--save-interval", "1000",
    "--log-throughput", "--profile", "--profile-step-start", "4", "--profile-step-end", "6",
    "--ckpt-format", "torch_dist", "--distributed-timeout-minutes", "60", "--save", "CKPT", "--load", "CKPT",
    "--tensorboard-dir", "TB",
]

GPT3_175B = [
    "--num-layers", "96", "--hidden-size", "12288", "--num-attention-heads", "96", "--seq-length", "2048",
    "--max-position-embeddings", "2048", "--attention-backend", "auto",
    "--micro-batch-size", "1", "--global-batch-size", "1536", "--rampup-batch-size", "16", "16", "5859375",
    "--train-iters", "500000", "--weight-decay", "0.1", "--adam-beta1", "0.9", "--adam-beta2", "0.95",
    "--init-method-std", "0.006", "--clip-grad", "1.0", "--fp16", "--lr", "6.0e-5", "--lr-decay-style", "cosine",
    "--min-lr", "6.0e-6", "--lr-warmup-fraction", ".001", "--lr-decay-iters", "430000",
    "--tensor-model-parallel-size", "8", "--pipeline-model-parallel-size", "16",
    "--data-path", "DATA_text_document", "--vocab-file", "VOCAB/gpt2-vocab.json", "--merge-file",
    "VOCAB/gpt2-merges.txt", "--split", "949,50,1",
    "--log-interval", "100", "--save-interval", "10000", "--eval-interval", "1000", "--save", "CKPT", "--load", "CKPT",
    "--eval-iters", "10", "--tensorboard-dir", "TB",
]

BERT_340M = [
    "--num-layers", "24", "--hidden-size", "1024", "--num-attention-heads", "16", "--seq-length", "512",
    "--max-position-embeddings", "512", "--attention-backend", "auto",
    "--micro-batch-size", "4", "--global-batch-size", "32", "--train-iters", "1000000", "--weight-decay", "1e-2",
    "--clip-grad", "1.0", "--fp16", "--lr", "0.0001", "--lr-decay-iters", "990000", "--lr-decay-style", "linear",
    "--min-lr", "1.0e-5", "--weight-decay", "1e-2", "--lr-warmup-fraction", ".01", "--clip-grad", "1.0",
    "--tensor-model-parallel-size", "8", "--pipeline-model-parallel-size", "16",
    "--data-path", "DATA_text_document", "--vocab-file", "VOCAB/bert-vocab.json", "--split", "949,50,1",
    "--log-interval", "100", "--save-interval", "10000", "--eval-interval", "1000", "--save", "CKPT", "--load", "CKPT",
    "--eval-iters", "10", "--tensorboard-dir", "TB",
]


def _dry_run(entry, argv, world, tmp_path):
    paths = {"CACHE": tmp_path / "cache", "CKPT": tmp_path / "ckpt", "TB": tmp_path / "tb"}
    argv = [str(paths.get(a, a)) for a in argv]
    return run_python([str(REPO_ROOT / entry), *argv, "--dry-run"], env={"WORLD_SIZE": str(world)}, cwd=tmp_path)


def _without(argv, flags):
    """argv minus each flag in ``flags`` and the values after it (up to the next --flag)."""
    out, skip = [], False
    for a in argv:
        if a.startswith("--"):
            skip = a in flags
        if not skip:
            out.append(a)
    return out


def _error_line(proc):
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


def _strip_refusals(entry, argv, world, tmp_path, rounds=4):
    """Dry-run, take out the flags the one error line names, repeat: (final process, [names refused per round]).
    Unsupported flags are refused all together first; an unsupported value of a supported flag comes after."""
    refusals = []
    for _ in range(rounds):
        proc = _dry_run(entry, argv, world, tmp_path)
        if proc.returncode == 0:
            return proc, refusals
        assert proc.returncode == 2 and "unrecognized arguments" not in proc.stderr, proc.stderr[-2000:]
        named = set(re.findall(r"--[a-z0-9-]+", _error_line(proc))) & set(argv)
        assert named, proc.stderr[-2000:]  # the line names at least one of the script's flags
        refusals.append(named)
        argv = _without(argv, named)
    raise AssertionError(f"still refused after {rounds} rounds: {refusals}")


def test_llama3_8b_script_refuses_by_name_then_validates(tmp_path):
    first = _dry_run("pretrain_gpt.py", LLAMA3_8B_FP8, 8, tmp_path)
    assert "not supported: FP8" in _error_line(first)  # reasons per group, not argparse's generic message
    ok, refusals = _strip_refusals("pretrain_gpt.py", LLAMA3_8B_FP8, 8, tmp_path)
    assert {"--fp8-format", "--fp8-param-gather", "--context-parallel-size", "--decoupled-lr"} <= refusals[0]
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "world size 8 = TP 1 x PP 1 x DP 8" in ok.stdout
    assert "GPT 32 layers, hidden 4096, 32 heads (8 query groups), FFN 14336 gated silu" in ok.stdout
    # upstream's NullTokenizer counts an end-of-document id after the 128,256; padded to a multiple of 128
    assert "positions rope" in ok.stdout and "vocabulary 128384 (NullTokenizer, 128257 tokens)" in ok.stdout
    assert "total 8,031,576,064" in ok.stdout  # Llama-3 8B's parameter count
    assert not any(p.exists() for p in (tmp_path / "ckpt", tmp_path / "tb", tmp_path / "cache"))  # nothing written
    kept = [a for a in LLAMA3_8B_FP8 if a.startswith("--") and not any(a in r for r in refusals)]
    print(f"Llama-3 8B: {len(kept)} flags honoured; refused: " + " | then | ".join(" ".join(sorted(r)) for r in refusals))


def test_bert_340m_script_fails_where_upstream_fails_and_validates_at_a_valid_layout(tmp_path):
    """The published script asks for 24 layers on 16 pipeline stages; upstream's validation refuses that as well.
    At 4 stages (the script otherwise unchanged) it validates: no flag of it is refused."""
    proc = _dry_run("pretrain_bert.py", BERT_340M, 8 * 16, tmp_path)
    assert proc.returncode == 2
    assert "--num-layers 24 is not divisible by --pipeline-model-parallel-size 16" in _error_line(proc)
    pp4 = list(BERT_340M)
    pp4[pp4.index("--pipeline-model-parallel-size") + 1] = "4"
    ok = _dry_run("pretrain_bert.py", pp4, 8 * 4, tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "world size 32 = TP 8 x PP 4 x DP 1" in ok.stdout and "BERT 24 layers, hidden 1024, 16 heads" in ok.stdout
    assert "6 layers per model chunk" in ok.stdout


def test_gpt3_175b_script_refuses_only_the_batch_rampup(tmp_path):
    ok, refusals = _strip_refusals("pretrain_gpt.py", GPT3_175B, 8 * 16, tmp_path)
    assert refusals == [{"--rampup-batch-size"}]
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "world size 128 = TP 8 x PP 16 x DP 1" in ok.stdout
    assert "GPT 96 layers, hidden 12288, 96 heads" in ok.stdout and "6 layers per model chunk" in ok.stdout
