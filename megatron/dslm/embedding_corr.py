"""The embedding-output token correlation r0 from token statistics (docs/theory.md, "Embedding correlation r0").

What r0 is. The embedding output of position i is e_i = W[t_i] + P[i] (+ T[s_i] for BERT), every table
drawn i.i.d. N(0, sigma^2) per entry. Per feature, over the random tables, two distinct positions i, j
of one sequence have

    Cov(e_i, e_j) = sigma_w^2 1[t_i = t_j] + sigma_t^2 1[s_i = s_j]     (P[i] and P[j] are different rows)
    Var(e_i)      = sigma_w^2 + sigma_p^2 + sigma_t^2,

so averaged over the pairs the data produces,

    r0 = (sigma_w^2 P(t_i = t_j) + sigma_t^2 P(s_i = s_j)) / (sigma_w^2 + sigma_p^2 + sigma_t^2).

With equal table stds (every scheme here) that is (P_same_token + P_same_type) / T. P_same_token is the
probability that two positions of one training sequence hold the same token id: measured within
sequences it includes burstiness (a topic word repeats); for i.i.d. tokens it is sum_i p_i^2, which
Zipf's law puts near zeta(2) / H_V^2 (the paper's estimate). For BERT, P(s_i = s_j) comes from the
token-type ids (two segments of about half a sequence each give ~1/2). r0 is the correlation *before*
embedding dropout; the predictor applies the (1 - p) factor.

Pure numpy; ``python -m megatron.dslm.estimate_corr`` is the command line over it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np


@dataclass(frozen=True)
class CorrEstimate:
    """r0 and the token statistics behind it."""

    embedding_corr: float
    same_token_prob: float  # P(t_i = t_j), i != j in one sequence (what r0 uses)
    unigram_same_prob: float  # sum_i p_i^2: the same probability for i.i.d. tokens
    same_type_prob: float
    num_tables: int
    num_sequences: int
    num_tokens: int


def zipf_same_token_prob(vocab_size: int) -> float:
    """sum_i p_i^2 for p_i proportional to 1/i over the vocabulary: zeta(2)-like sum over H_V^2."""
    ranks = np.arange(1, vocab_size + 1, dtype=np.float64)
    harmonic = float(np.sum(1.0 / ranks))
    return float(np.sum(1.0 / ranks**2)) / harmonic**2


def corr_from_probs(same_token_prob: float, num_tables: int, same_type_prob: float = 0.5, word_var_share: Optional[float] = None) -> float:
    """r0 from the pair probabilities; ``word_var_share`` defaults to 1/num_tables (equal table stds)."""
    if num_tables not in (2, 3):
        raise ValueError("num_tables must be 2 (word + position) or 3 (+ token type)")
    word_share = 1.0 / num_tables if word_var_share is None else word_var_share
    type_share = (1.0 - word_share) / 2.0 if num_tables == 3 else 0.0
    return word_share * same_token_prob + type_share * same_type_prob


def estimate_embedding_corr(
    token_id_sequences: Iterable[Sequence[int]],
    num_tables: int = 2,
    tokentype_id_sequences: Optional[Iterable[Sequence[int]]] = None,
    word_var_share: Optional[float] = None,
) -> CorrEstimate:
    """Estimate r0 from training sequences (each one attention window of token ids).

    Args:
        token_id_sequences: iterable of token-id sequences as the model sees them (length >= 2 counts).
        num_tables: 2 (word + position, GPT) or 3 (+ token type, BERT).
        tokentype_id_sequences: BERT segment ids aligned with the tokens; without them P(same type) = 1/2.
        word_var_share: sigma_w^2 / total embedding variance; default 1/num_tables.
    Returns:
        ``CorrEstimate`` with r0 in ``embedding_corr``.
    """
    same_pairs = 0.0
    total_pairs = 0.0
    unigram: Counter = Counter()
    num_sequences = 0
    num_tokens = 0
    for seq in token_id_sequences:
        ids = np.asarray(seq, dtype=np.int64)
        n = ids.size
        if n < 2:
            continue
        _, counts = np.unique(ids, return_counts=True)
        same_pairs += float(np.sum(counts * (counts - 1.0)))
        total_pairs += n * (n - 1.0)
        unigram.update(dict(zip(*np.unique(ids, return_counts=True))))
        num_sequences += 1
        num_tokens += n
    if total_pairs == 0:
        raise ValueError("need at least one sequence with two or more tokens")
    freqs = np.array(list(unigram.values()), dtype=np.float64) / num_tokens
    same_type = 0.5
    if tokentype_id_sequences is not None:
        type_same, type_total = 0.0, 0.0
        for seq in tokentype_id_sequences:
            _, counts = np.unique(np.asarray(seq), return_counts=True)
            n = counts.sum()
            type_same += float(np.sum(counts * (counts - 1.0)))
            type_total += n * (n - 1.0)
        same_type = type_same / type_total if type_total else 0.5
    same_token = same_pairs / total_pairs
    return CorrEstimate(
        embedding_corr=corr_from_probs(same_token, num_tables, same_type, word_var_share),
        same_token_prob=same_token,
        unigram_same_prob=float(np.sum(freqs**2)),
        same_type_prob=same_type,
        num_tables=num_tables,
        num_sequences=num_sequences,
        num_tokens=num_tokens,
    )
