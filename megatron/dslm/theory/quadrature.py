"""Exact Gaussian expectations by Gauss-Hermite quadrature, one and two dimensions (no sampling).

Used where an activation has no closed-form Gaussian moments (SiLU, the gate of SwiGLU). The integrands are
smooth, so 64 nodes per axis are exact to ~1e-10 for the variances an init produces (docs/theory.md,
"Today's decoder block").
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(64)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()  # weights of the standard normal


def expect(f: Callable[[np.ndarray], np.ndarray], var: float) -> float:
    """E[f(z)] for z ~ N(0, var)."""
    return float(f(math.sqrt(max(var, 0.0)) * _NODES) @ _WEIGHTS)


def expect_pair(f: Callable, g: Callable, var: float, corr: float) -> float:
    """E[f(z_1) g(z_2)] for (z_1, z_2) jointly N(0, var) with correlation ``corr``."""
    corr = min(1.0, max(-1.0, corr))
    std = math.sqrt(max(var, 0.0))
    first = std * _NODES[:, None]
    second = std * (corr * _NODES[:, None] + math.sqrt(1.0 - corr**2) * _NODES[None, :])
    return float(_WEIGHTS @ (f(first) * g(second)) @ _WEIGHTS)
