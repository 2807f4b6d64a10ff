"""Rotary position embeddings (RoPE) in the attention logits (docs/theory.md, "Today's decoder block").

RoPE rotates each pair of query/key features m by the angle t theta_m at position t, theta_m =
base^(-2m / r_dim) over the rotated r_dim = rotary_percent * head_dim features (megatron-core's
frequencies). The logit q_i . k_j becomes q_i^T R((j - i) theta) k_j: rotations keep norms, so the logit
variance is unchanged, but two keys j, j' of one query now covary only through
``lag_cos(j - j')`` = mean over features of cos((j - j') theta_m) (1 for unrotated features):
the key-key logit correlation r becomes r c(j - j'), c_bar its mean over the key pairs a row sees.

What this does to the attention output (measured, docs/theory.md "Today's decoder block"): little. The
rotated shared part of the logits is a function of the lag that varies smoothly for most frequencies, so it
does not spread the softmax like i.i.d. noise of variance r (1 - c_bar) s would -- modelling it that way
over-predicts the output variance by up to 10% at logit variance 4. The forward closed forms therefore stay
the unrotated ones. The backward does change: two queries i, i' share their logits to one key only through
c(i - i') of the token-shared part, so the coherence of P's column sums (``attention``'s column inflation)
uses r c_bar -- measured, RoPE lowers the input gradient by up to ~35% at high correlation and logit
variance, which this captures. Values are never rotated.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np


@dataclass(frozen=True)
class Rotary:
    head_dim: int
    base: float = 10000.0
    percent: float = 1.0

    @property
    def rotated_dim(self) -> int:
        return int(self.head_dim * self.percent) // 2 * 2

    def frequencies(self) -> np.ndarray:
        r = self.rotated_dim
        return self.base ** (-np.arange(0, r, 2, dtype=np.float64) / r) if r else np.zeros(0)

    def lag_cos(self, lags) -> np.ndarray:
        """c(lag): the share of the key-key logit covariance kept at distance ``lag``."""
        lags = np.asarray(lags, dtype=np.float64)
        freqs = self.frequencies()
        rotated_share = self.rotated_dim / self.head_dim
        if freqs.size == 0:
            return np.ones_like(lags)
        return rotated_share * np.cos(lags[..., None] * freqs).mean(-1) + (1.0 - rotated_share)

    def window_mean_cos(self, num_keys) -> np.ndarray:
        """c_bar(n): mean of c(j - j') over the ordered pairs j != j' of a row with n consecutive keys."""
        return _window_mean_cos(self, int(np.max(num_keys)))[np.asarray(num_keys, dtype=np.int64) - 1]


@lru_cache(maxsize=64)
def _window_mean_cos(rotary: Rotary, max_keys: int) -> np.ndarray:
    lags = np.arange(1, max_keys, dtype=np.float64)
    c = rotary.lag_cos(lags)
    # sum_{lag < n} (n - lag) c(lag) = n A_n - B_n, A / B the cumulative sums of c and lag * c.
    a = np.concatenate([[0.0], np.cumsum(c)])
    b = np.concatenate([[0.0], np.cumsum(lags * c)])
    n = np.arange(1, max_keys + 1, dtype=np.float64)
    pairs = n * (n - 1.0)
    summed = 2.0 * (n * a - b)
    return np.where(pairs > 0, summed / np.maximum(pairs, 1.0), 1.0)


def rotary_logit_corr(corr: float, lag, rotary: Rotary) -> np.ndarray:
    """Correlation of one query's logits to two keys ``lag`` apart under RoPE (corr: the keys' correlation)."""
    return corr * rotary.lag_cos(lag)
