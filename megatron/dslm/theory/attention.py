"""Softmax, single-head and multi-head attention moments, forward and backward (docs/theory.md,
"Components"), including the query/key path of the backward pass *(ours)*.

Derivation of the backward pass (near-uniform attention at init, logits with variance s and correlation
r across keys, e = exp((1 - r) s) the softmax's second-moment inflation, p = attention dropout). With
P the probabilities, P~ = P * mask / (1 - p), O = P~ V, G = dL/dO:

* value path: dV_j = sum_i P~_ij G_i. Diagonal terms give E[sum_j P_ij^2] / (1 - p) per row, off-diagonal
  ones r_g B2 exp(r (1 - r) s) (column sums of P fluctuate with the key), then W_V^T multiplies by
  d_k sigma_v^2.
* softmax: dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik), dP_ij = G_i . v~_j. The centred v~_j has per-element
  variance sigma_v'^2 (1 / (1 - p) - r) (dropout decorrelates what the shared token mean would cancel).
* query path: dQ_i = sum_j dS_ij K_j / sqrt(d_k); since sum_j dS_ij = 0 only the centred keys, variance
  sigma_k'^2 (1 - r), contribute: Var = e sigma_g^2 sigma_v'^2 sigma_k'^2 (1/(1-p) - r)(1 - r) Q1, then
  W_Q^T multiplies by d_k sigma_q^2.
* key path: dK_j = sum_i dS_ij Q_i / sqrt(d_k); the diagonal terms mirror the query path (same Q1), the
  cross-query terms keep r_g r (1 - r) of the shared value deviation: Var = sigma_g^2 sigma_v'^2
  sigma_q'^2 [e (1/(1-p) - r) Q1 + r_g r (1 - r) B2], then W_K^T multiplies by d_k sigma_k^2.

The mask enters only through the mixing statistics A1, A2, B2, Q1 of the uniform attention matrix (see
``mixing_stats``), so causal (GPT) and bidirectional (BERT) attention share every formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from typing import Optional

from .layers import linear, linear_backward
from .moments import GradMoments, Moments, from_cov, grad_from_cov
from .rotary import Rotary


_HERMITE_NODES, _HERMITE_WEIGHTS = np.polynomial.hermite_e.hermegauss(48)
_HERMITE_WEIGHTS = _HERMITE_WEIGHTS / _HERMITE_WEIGHTS.sum()


def softmax_power_sums(spread_var: float, num_keys) -> tuple:
    """E[sum_j P_j^2], E[sum_j P_j^3] and E[sum_j P_j^4] of a softmax over ``num_keys`` i.i.d. N(0, spread_var) logits.

    P_1 = 1 / (1 + Z exp(-x_1)) with Z the sum of the other exp(x_k); Z is replaced by the log-normal of
    equal mean and variance (Fenton-Wilkinson), leaving one Gaussian integral done by Gauss-Hermite.
    Accurate while exp(spread_var) is small against the key count; saturated softmaxes are approximate.
    ``num_keys`` may be an int or a numpy array (causal rows).
    """
    n = np.atleast_1d(np.asarray(num_keys, dtype=np.float64))
    others = np.maximum(n - 1.0, 1.0)
    log_var_z = np.log1p(np.expm1(spread_var) / others)
    log_mean_z = np.log(others) + spread_var / 2.0 - log_var_z / 2.0
    t = log_mean_z[:, None] + np.sqrt(log_var_z + spread_var)[:, None] * _HERMITE_NODES[None, :]
    prob = 1.0 / (1.0 + np.exp(np.minimum(t, 700.0)))
    sum_sq = n * (prob**2 @ _HERMITE_WEIGHTS)
    sum_cube = n * (prob**3 @ _HERMITE_WEIGHTS)
    sum_fourth = n * (prob**4 @ _HERMITE_WEIGHTS)
    single = n <= 1.0
    sum_sq = np.where(single, 1.0, np.minimum(sum_sq, 1.0))
    sum_cube = np.where(single, 1.0, np.minimum(sum_cube, sum_sq))
    sum_fourth = np.where(single, 1.0, np.minimum(sum_fourth, sum_cube))
    return sum_sq, sum_cube, sum_fourth


@dataclass(frozen=True)
class MixingStats:
    """Second-order statistics of the attention matrix P at init, averaged over rows/columns.

    sum_sq: mean_i E[sum_j P_ij^2] (what the independent part of V keeps; uniform: 1/n);
    cross: mean over query pairs i != k of sum_j A_ij A_kj for the uniform A;
    col_cross: mean_j sum_{i != i'} A_ij A_i'j (uniform A); jacobian: mean_i E[sum_j P_ij^2 (1 - 2 P_ij
    + sum_k P_ik^2)], the share the softmax Jacobian passes to the logits (uniform: (n-1)/n^2).
    """

    sum_sq: float
    cross: float
    col_cross: float
    jacobian: float
    col_pair_diag: float = 0.0  # mean_{j != j'} sum_i A_ij A_ij' (uniform: 1/L)
    col_pair_cross: float = 1.0  # mean_{j != j'} sum_{i != i'} A_ij A_i'j' (uniform: (L-1)/L)


@lru_cache(maxsize=4096)
def mixing_stats(seq_length: int, causal: bool, spread_var: float = 0.0) -> MixingStats:
    """Causal rows see n_i = i keys (GPT), bidirectional rows all L (BERT). O(L) numpy."""
    return _mixing_stats(seq_length, causal, lambda n: spread_var)


def _mixing_stats(length: int, causal: bool, spread_of_row) -> MixingStats:
    """``spread_of_row(n)``: the within-row logit spread of rows with n keys (a float or an array like n)."""
    n = np.arange(1, length + 1, dtype=np.float64) if causal else np.array([float(length)])
    if causal and length > 128:
        # The row functions are smooth in n: evaluate on 1..64 plus a log grid, interpolate the rest.
        grid = np.unique(np.concatenate([np.arange(1.0, 65.0), np.round(np.geomspace(64.0, length, 64))]))
        sums = softmax_power_sums(spread_of_row(grid.astype(np.int64)), grid)
        sum_sq, sum_cube, sum_fourth = (np.interp(n, grid, values) for values in sums)
    else:
        sum_sq, sum_cube, sum_fourth = softmax_power_sums(spread_of_row(n.astype(np.int64)), n)
    # E[(sum P^2)^2] ~ max(E[sum P^4], E[sum P^2]^2): exact for uniform and for one-hot rows.
    sq_of_sum = np.maximum(sum_fourth, sum_sq**2)
    jacobian = np.maximum(sum_sq - 2.0 * sum_cube + sq_of_sum, 0.0)
    if not causal:
        cross, col_cross = 1.0 / length, (length - 1.0) / length
        pair_diag, pair_cross = 1.0 / length, (length - 1.0) / length
    else:
        # Rows i < k share keys 1..i, each weighted 1/(i k): sum_j A_ij A_kj = 1/k.
        cross = float(2.0 * np.sum((n - 1.0) / n) / (length * (length - 1.0))) if length > 1 else 0.0
        tail1 = np.cumsum((1.0 / n)[::-1])[::-1]
        tail2 = np.cumsum((1.0 / n**2)[::-1])[::-1]
        col_cross = float(np.mean(tail1**2 - tail2))
        # Columns j < j' share the rows i >= j': sum_i A_ij A_ij' = tail2[j'].
        pairs = length * (length - 1.0)
        pair_diag = float(2.0 * np.sum((n - 1.0) * tail2) / pairs) if length > 1 else 0.0
        pair_all = (np.sum(tail1) ** 2 - np.sum(tail1**2)) / pairs if length > 1 else 0.0
        pair_cross = float(pair_all - pair_diag)
    return MixingStats(float(np.mean(sum_sq)), cross, col_cross, float(np.mean(jacobian)), pair_diag, pair_cross)


def softmax(logits: Moments, length: int, full: bool = True) -> Moments:
    """Probabilities of a softmax over ``length`` logits (variance var, correlation corr across keys).

    Only the per-key independent part (1 - corr) var spreads the probabilities. The approximate form
    (the paper's, docs/theory.md "Components") assumes length >> exp((1 - corr) var); the full form *(ours)* integrates over the
    query key's logit with a log-normal sum for the others, which stays below the 1/L bound.
    """
    spread_var = max(0.0, (1.0 - logits.corr) * logits.var)
    if not full:
        var = math.expm1(spread_var) / length**2
    else:
        sum_sq = softmax_power_sums(spread_var, length)[0]
        var = float(sum_sq[0]) / length - 1.0 / length**2
    return Moments(1.0 / length, var, 0.0)


def softmax_backward(grad: GradMoments, logits: Moments, length: int, full: bool = True) -> GradMoments:
    """dS_j = P_j (g_j - sum_k P_k g_k) for i.i.d. g: E[P_j^2 (1 - 2 P_j + sum_k P_k^2)] sigma_g^2."""
    spread_var = max(0.0, (1.0 - logits.corr) * logits.var)
    if not full:
        return GradMoments(grad.var * math.exp(spread_var) / length**2, 0.0)
    stats = mixing_stats(length, False, round(spread_var, 6))
    return GradMoments(grad.var * stats.jacobian / length, 0.0)


def attention_logit_var(x: Moments, hidden_size: int, query_std: float, key_std: float) -> float:
    """Variance of QK^T / sqrt(d_k): d^2 sigma_q^2 sigma_k^2 E[x^2]^2, independent of the head size."""
    return hidden_size**2 * query_std**2 * key_std**2 * x.second_moment**2


@dataclass(frozen=True)
class _HeadInputs:
    value_var: float  # per-element variance of V = X W_V
    corr: float  # token correlation of Q, K, V (uncentred, as linear layers see it)
    logit_var: float
    stats: MixingStats


def _mean_pair_cos(seq_length: int, causal: bool, rotary: Rotary) -> float:
    rows = np.arange(1, seq_length + 1) if causal else np.array([seq_length])
    return float(np.mean(rotary.window_mean_cos(rows)))


def _head_inputs(x, hidden_size, query_std, key_std, value_std, seq_length, causal) -> _HeadInputs:
    corr = min(1.0, max(0.0, x.second_moment_corr))
    logit_var = attention_logit_var(x, hidden_size, query_std, key_std)
    value_var = hidden_size * value_std**2 * x.second_moment
    spread_var = round((1.0 - corr) * logit_var, 3)  # rounded: a cache key shared by similar layers
    return _HeadInputs(value_var, corr, logit_var, mixing_stats(seq_length, causal, spread_var))


def single_head_attention(
    x: Moments,
    hidden_size: int,
    query_std: float,
    key_std: float,
    value_std: float,
    seq_length: int,
    attention_dropout: float = 0.0,
    causal: bool = False,
) -> Moments:
    """softmax(Q K^T / sqrt(d_k)) V with dropout on the probabilities, no output projection.

    Var = sigma_v'^2 [r + e A1 (1/(1-p) - r)]: the token-shared part r survives averaging, the
    independent part is averaged over the ~1/A1 visible keys, and the dropout mask's noise on the
    row sum adds r p / (1 - p) of the shared part. RoPE leaves these moments
    (``theory.rotary``)
    """
    h = _head_inputs(x, hidden_size, query_std, key_std, value_std, seq_length, causal)
    keep = 1.0 - attention_dropout
    var = h.value_var * (h.corr + h.stats.sum_sq * (1.0 / keep - h.corr))
    cov = h.value_var * (h.corr + (1.0 - h.corr) * h.stats.cross)
    return from_cov(0.0, var, min(cov, var))


def single_head_attention_backward(
    grad: GradMoments,
    x: Moments,
    hidden_size: int,
    head_dim: int,
    query_std: float,
    key_std: float,
    value_std: float,
    seq_length: int,
    attention_dropout: float = 0.0,
    causal: bool = False,
    value_path_only: bool = False,
    rotary: Optional[Rotary] = None,
) -> GradMoments:
    """Gradient w.r.t. the attention input X (one head) through the value, query and key projections.

    ``rotary``: RoPE on Q and K. Two queries i, i' then share their logits to key j only through c(i - i')
    of the token-shared part, so the column coherence below uses r c_bar instead of r (c_bar: the mean
    lag cosine over the query pairs, ``theory.rotary``).
    """
    h = _head_inputs(x, hidden_size, query_std, key_std, value_std, seq_length, causal)
    keep = 1.0 - attention_dropout
    r, r_g, s = h.corr, grad.corr, h.stats
    # Two queries i, i' see key j through logits sharing k_j: their centred logits covary by
    # r (1 - r) s, so column sums of P fluctuate and the correlated gradient adds up more coherently.
    r_col = r if rotary is None else r * _mean_pair_cos(seq_length, causal, rotary)
    column_inflation = math.exp(min(50.0, r_col * (1.0 - r) * h.logit_var))
    value_path = head_dim * value_std**2 * grad.var * (s.sum_sq / keep + r_g * s.col_cross * column_inflation)
    value_cov = head_dim * value_std**2 * grad.var * (s.col_pair_diag + r_g * s.col_pair_cross)
    if value_path_only:
        return grad_from_cov(value_path, value_cov)
    query_var = hidden_size * query_std**2 * x.second_moment
    key_var = hidden_size * key_std**2 * x.second_moment
    centred = max(0.0, 1.0 / keep - h.corr)  # values are never rotated
    common = grad.var * h.value_var
    query_path = head_dim * query_std**2 * common * key_var * centred * (1.0 - r) * s.jacobian
    key_path = head_dim * key_std**2 * common * query_var * (
        centred * s.jacobian + r_g * r_col * (1.0 - r) * s.col_cross
    )
    return grad_from_cov(value_path + query_path + key_path, value_cov)


@dataclass(frozen=True)
class AttentionConfig:
    """Shape and init of one multi-head attention block (absolute stds; O maps num_heads*head_dim -> d)."""

    hidden_size: int
    num_heads: int
    head_dim: int
    query_std: float
    key_std: float
    value_std: float
    out_std: float
    seq_length: int
    attention_dropout: float = 0.0
    causal: bool = False
    # Grouped-query attention: heads share K/V within groups. The moments at init are those of MHA (every
    # head's output and gradient meets an independent block of W_O, so shared K/V add no cross terms);
    # only the K/V projections' fan-out (num_query_groups * head_dim) changes, which schemes account for.
    num_query_groups: Optional[int] = None
    rotary: Optional[Rotary] = None  # RoPE on Q and K (changes the backward only, ``theory.rotary``)

    def __post_init__(self):
        groups = self.num_query_groups or self.num_heads
        if groups < 1 or self.num_heads % groups:
            raise ValueError(f"{self.num_heads} attention heads are not divisible into {groups} query groups")

    def head_args(self) -> tuple:
        """(query_std, key_std, value_std, seq_length, attention_dropout, causal) for the single-head functions."""
        return (self.query_std, self.key_std, self.value_std, self.seq_length, self.attention_dropout, self.causal)


def multi_head_attention(x: Moments, cfg: AttentionConfig) -> Moments:
    """Heads are independent given X; the output projection gathers num_heads * head_dim features."""
    head = single_head_attention(x, cfg.hidden_size, *cfg.head_args())
    return linear(head, cfg.num_heads * cfg.head_dim, cfg.out_std)


def multi_head_attention_backward(grad: GradMoments, x: Moments, cfg: AttentionConfig) -> GradMoments:
    """W_O^T spreads the gradient over the heads; each head's input gradient adds (independent weights)."""
    head_grad = linear_backward(grad, cfg.hidden_size, cfg.out_std)
    per_head = single_head_attention_backward(head_grad, x, cfg.hidden_size, cfg.head_dim, *cfg.head_args(),
                                              rotary=cfg.rotary)
    return per_head.scaled(cfg.num_heads)
