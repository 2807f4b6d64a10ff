"""estimate_corr: r0 from token statistics vs the correlation of actual random embedding tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from megatron.dslm.embedding_corr import estimate_embedding_corr, zipf_same_token_prob
from megatron.dslm.estimate_corr import main
from megatron.dslm.mcore.data import indexed_dataset_windows


def _zipf_sequences(rng, vocab, num_seqs, length, bursty=False):
    p = 1.0 / np.arange(1, vocab + 1)
    p /= p.sum()
    seqs = []
    for _ in range(num_seqs):
        seq = rng.choice(vocab, size=length, p=p)
        if bursty:  # a topic word repeated through the window
            seq[rng.random(length) < 0.3] = rng.integers(vocab)
        seqs.append(seq)
    return seqs, p


def _measured_corr(seqs, vocab, length, num_tables, width=64, draws=64):
    """Token correlation of word + position (+ type) embedding sums over random N(0, 1) tables."""
    gen = torch.Generator().manual_seed(0)
    ids = torch.as_tensor(np.stack(seqs))
    covs, vars_ = [], []
    for _ in range(draws):
        out = torch.randn(vocab, width, generator=gen)[ids] + torch.randn(length, width, generator=gen)
        if num_tables == 3:
            types = (torch.arange(length) >= length // 2).long()
            out = out + torch.randn(2, width, generator=gen)[types]
        total = out.sum(1)
        covs.append(((total**2).sum() - (out**2).sum()).item() / (out.shape[0] * width * length * (length - 1)))
        vars_.append(out.pow(2).mean().item())
    return np.mean(covs) / np.mean(vars_)


@pytest.mark.parametrize("num_tables,bursty", [(2, False), (2, True), (3, False)])
def test_estimate_matches_random_embedding_tables(num_tables, bursty):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    vocab, length = 200, 32
    seqs, p = _zipf_sequences(rng, vocab, 256, length, bursty)
    types = [(np.arange(length) >= length // 2).astype(int)] * len(seqs) if num_tables == 3 else None
    estimate = estimate_embedding_corr(seqs, num_tables=num_tables, tokentype_id_sequences=types)
    measured = _measured_corr(seqs, vocab, length, num_tables)
    assert estimate.embedding_corr == pytest.approx(measured, rel=0.1, abs=0.003)
    if not bursty:
        assert estimate.same_token_prob == pytest.approx(float(np.sum(p**2)), rel=0.1)
    else:
        assert estimate.same_token_prob > 1.5 * estimate.unigram_same_prob


def test_zipf_formula_and_indexed_dataset(tmp_path):
    assert zipf_same_token_prob(30522) == pytest.approx(1.6449 / (np.log(30522) + 0.5772) ** 2, rel=0.01)
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    rng = np.random.default_rng(1)
    docs = [rng.integers(0, 50, size=int(rng.integers(5, 40))) for _ in range(30)]
    prefix = str(tmp_path / "toy")
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=np.int32)
    for doc in docs:
        builder.add_item(torch.as_tensor(doc, dtype=torch.int32))
        builder.end_document()
    builder.finalize(prefix + ".idx")
    windows = list(indexed_dataset_windows(prefix, 16, 10_000))
    flat = np.concatenate(docs)
    expected = [flat[i : i + 16] for i in range(0, len(flat) - len(flat) % 16, 16)]
    assert all(np.array_equal(w, e) for w, e in zip(windows, expected))
    assert main(["--data-path", prefix, "--seq-length", "16"]) == 0
    assert main(["--data-path", str(tmp_path / "missing")]) == 2
