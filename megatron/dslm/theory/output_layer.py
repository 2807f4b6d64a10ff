"""The output layer (tied or untied) with its logit scale, and the cross-entropy gradient it sends back
(docs/theory.md, "Today's decoder block").

logits z = s h W^T, W (vocab x d) of std sigma: Var z = s^2 d sigma^2 E[h^2]; two tokens' logits for the same
word covary through h only (uncentred correlation of h). Backward, per token of the summed loss, the logit
gradient is p - e_y with E||p - e_y||^2 = 1 - 2/V + E[sum_v p_v^2] (targets independent of the logits at
init); two tokens' logit gradients meet in E[g_i . g_j] = E[sum_v p_iv p_jv] - 2/V + P(y_i = y_j), the first
term exp(rho Var z) / V for log-normal softmax weights. dL/dh = s W g then multiplies both by s^2 sigma^2.
Tied models: W is the word embedding, whose row for the input token is also inside h; at depth that link is
diluted and ignored here (docs/theory.md, "Known gaps").
"""

from __future__ import annotations

import math

from .attention import softmax_power_sums
from .moments import GradMoments, Moments, grad_from_cov


def output_logits(h: Moments, hidden_size: int, weight_std: float, logit_scale: float = 1.0) -> Moments:
    gain = logit_scale**2 * hidden_size * weight_std**2
    return Moments(0.0, gain * h.second_moment, h.second_moment_corr)


def cross_entropy_backward(logits: Moments, vocab_size: int, weight_std: float, logit_scale: float = 1.0,
                           target_collision: float = 0.0) -> GradMoments:
    """Gradient of the token-summed cross-entropy w.r.t. the output layer's input h.

    ``target_collision``: P(two tokens have the same target), sum of squared unigram frequencies.
    """
    v = float(vocab_size)
    sum_sq = float(softmax_power_sums(logits.var, vocab_size)[0][0])
    logit_grad_sq = 1.0 - 2.0 / v + sum_sq
    logit_grad_cross = math.exp(logits.corr * logits.var) / v - 2.0 / v + target_collision
    gain = logit_scale**2 * weight_std**2
    return grad_from_cov(gain * logit_grad_sq, gain * logit_grad_cross)
