"""Scheme name -> table builder: the one place that dispatches on a scheme's name (style.md, "Smells")."""

from __future__ import annotations

from .deepnet import deepnet_table
from .dsinit import dsinit_table
from .dslm import dslm_table
from .dslm_simplified import dslm_simplified_table
from .megatron import megatron_table
from ..contract import InitTable, ModelArch
from .xavier import xavier_table

_BUILDERS = {
    "megatron": megatron_table,
    "xavier": xavier_table,
    "dslm": dslm_table,
    "dslm_simplified": dslm_simplified_table,
    "deepnet": deepnet_table,
    "dsinit": dsinit_table,
}

SCHEME_NAMES = tuple(_BUILDERS)


def canonical_scheme_name(name: str) -> str:
    """Accept "dslm-simplified" for "dslm_simplified" (flag spelling)."""
    canonical = name.strip().lower().replace("-", "_")
    if canonical not in _BUILDERS:
        raise ValueError(f"unknown init scheme {name!r}; choose one of {', '.join(SCHEME_NAMES)}")
    return canonical


def build_init_table(name: str, arch: ModelArch) -> InitTable:
    """Build the sigma table of scheme ``name`` for ``arch``.

    Args:
        name: one of ``SCHEME_NAMES`` (hyphens accepted for underscores).
        arch: model shape, dropout, Pre-/Post-LN, r0 and residual-scaling knobs.
    Returns:
        the ``InitTable`` the predictor and ``apply_init_table`` both read.
    Raises:
        ValueError: unknown name, or a residual lambda^2 + beta^2 != 1 not explicitly allowed.
    """
    if arch.num_layers < 1 or arch.hidden_size < 1 or arch.num_attention_heads < 1 or arch.seq_length < 1:
        raise ValueError(f"model dimensions must be positive: {arch}")
    if not 0.0 <= arch.hidden_dropout < 1.0 or not 0.0 <= arch.attention_dropout < 1.0:
        raise ValueError("dropout probabilities must be in [0, 1)")
    return _BUILDERS[canonical_scheme_name(name)](arch)
