"""MLM masking statistics of megatron-core's BERT dataset on real preprocessed Wikipedia text."""

import json
from pathlib import Path

from tests.support import run_python

SCRIPT = Path(__file__).resolve().parent / "scripts" / "masking_stats.py"


def _stats(prefix, vocab, mask_prob, samples=400, seq_length=128):
    proc = run_python([str(SCRIPT), prefix, vocab, str(samples), str(seq_length), str(mask_prob)], timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_masking_rate_and_80_10_10_split(bert_corpus):
    prefix, vocab = bert_corpus
    s = _stats(prefix, vocab, 0.15)
    assert s["masked"] > 3000, s  # enough masked tokens for the tolerances below (binomial sd < 0.7%)
    # n_maskings = round(0.15 * tokens incl. [CLS]/[SEP]); whole-word n-grams that would overshoot are skipped,
    # so the realised rate sits slightly below 15%.
    assert 0.13 <= s["masked_fraction"] <= 0.155, s
    assert abs(s["mask_token"] - 0.80) < 0.03, s
    assert abs(s["original"] - 0.10) < 0.025, s
    assert abs(s["random"] - 0.10) < 0.025, s
    # Sentence order: segments swapped for about half of the samples, and every sample has two segments.
    assert 0.4 <= s["is_random_fraction"] <= 0.6, s
    assert s["two_segments"] == 1.0, s


def test_mask_prob_flag_changes_the_rate(bert_corpus):
    prefix, vocab = bert_corpus
    s = _stats(prefix, vocab, 0.30, samples=200)
    assert 0.26 <= s["masked_fraction"] <= 0.31, s
