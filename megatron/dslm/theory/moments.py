"""Moment types the theory passes between components (docs/theory.md, "Notation").

A hidden state is modelled per feature: every token has mean ``mean`` and variance ``var``; two distinct
tokens have covariance ``corr * var``. Expectations run over the random weights *and* the random input, so
``var`` is what a Monte-Carlo estimate over many features, tokens and draws converges to.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Moments:
    """Forward moments of a hidden state: per-element mean and variance, cross-token correlation."""

    mean: float = 0.0
    var: float = 1.0
    corr: float = 0.0

    @property
    def second_moment(self) -> float:
        """E[x^2]; what a zero-mean random linear layer multiplies by its fan-in."""
        return self.var + self.mean**2

    @property
    def cov(self) -> float:
        """Covariance of two distinct tokens of the same feature."""
        return self.corr * self.var

    @property
    def second_moment_corr(self) -> float:
        """E[x_i x_j] / E[x_i^2] for distinct tokens: the correlation a following linear layer sees."""
        return (self.cov + self.mean**2) / self.second_moment if self.second_moment > 0 else 0.0


@dataclass(frozen=True)
class GradMoments:
    """Moments of the loss gradient w.r.t. a hidden state (mean 0): variance and cross-token correlation."""

    var: float = 1.0
    corr: float = 0.0

    @property
    def cov(self) -> float:
        return self.corr * self.var

    def scaled(self, factor_var: float) -> "GradMoments":
        """Multiply every element by sqrt(factor_var) (correlation unchanged)."""
        return GradMoments(self.var * factor_var, self.corr)


def from_cov(mean: float, var: float, cov: float) -> Moments:
    """Build Moments from a covariance, guarding the var == 0 corner."""
    return Moments(mean, var, cov / var if var > 0 else 0.0)


def grad_from_cov(var: float, cov: float) -> GradMoments:
    return GradMoments(var, cov / var if var > 0 else 0.0)
