"""Scheme name -> record (builder and the config fields it reads): the only place that dispatches on a
scheme's name, and the only validator of the method's settings (training and every CLI call ``check_config``).
"""

from __future__ import annotations

import importlib
from dataclasses import replace
from typing import Iterable

from ..config import SCHEME_KNOBS, flag
from ..contract import InitTable, ModelArch
from .common import Scheme, residual_squares

# One line per scheme: the module megatron/dslm/schemes/<name>.py, which defines ``SCHEME``.
_SCHEME_MODULES = (
    "megatron",
    "xavier",
    "dslm",
    "dslm_simplified",
    "deepnet",
    "dsinit",
)
_SCHEMES = tuple(importlib.import_module(f"{__package__}.{module}").SCHEME for module in _SCHEME_MODULES)
SCHEMES = {scheme.name: scheme for scheme in _SCHEMES}
SCHEME_NAMES = tuple(SCHEMES)


def canonical_scheme_name(name: str) -> str:
    """Accept "dslm-simplified" for "dslm_simplified" (flag spelling)."""
    canonical = str(name).strip().lower().replace("-", "_")
    if canonical not in SCHEMES:
        raise ValueError(f"{flag('init_scheme')} {name!r} is unknown; choose one of "
                         f"{', '.join(s.flag_name for s in _SCHEMES)}")
    return canonical


def check_config(name: str, arch: ModelArch, explicit: Iterable[str] = (),
                 read_elsewhere: Iterable[str] = ()) -> Scheme:
    """Validate scheme ``name`` with ``arch``; return its record.

    Args:
        name: scheme name (hyphens accepted for underscores).
        arch: model shape, dropout, r0 and residual-scaling knobs.
        explicit: ``DSLMConfig`` fields the user set on the command line.
        read_elsewhere: fields the caller itself reads besides the scheme (the predictor reads r0).
    Raises:
        ValueError, one line naming the flag: unknown scheme, bad sizes or dropout, a residual
        lambda^2 + beta^2 != 1 not allowed, or an explicitly set knob that the scheme ignores.
    """
    scheme = SCHEMES[canonical_scheme_name(name)]
    for field_name in ("num_layers", "hidden_size", "num_attention_heads", "seq_length"):
        value = getattr(arch, field_name)
        if value is None or value < 1:
            raise ValueError(f"{flag(field_name)} must be a positive integer, got {value}")
    for field_name in ("hidden_dropout", "attention_dropout"):
        value = getattr(arch, field_name)
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{flag(field_name)} must be in [0, 1), got {value}")
    if not 0.0 <= arch.embedding_corr <= 1.0:
        raise ValueError(f"{flag('embedding_corr')} must be in [0, 1], got {arch.embedding_corr}")
    residual_squares(arch)  # the values themselves, whichever scheme reads them
    ignored = sorted((set(explicit) & SCHEME_KNOBS) - scheme.reads - set(read_elsewhere))
    if ignored:
        readers = [s.flag_name for s in _SCHEMES if ignored[0] in s.reads]
        raise ValueError(
            f"{flag(ignored[0])} has no effect with {flag('init_scheme')} {scheme.flag_name} "
            f"(read by: {', '.join(readers) or 'no scheme'}); drop it or choose a scheme that reads it"
        )
    return scheme


def build_init_table(name: str, arch: ModelArch) -> InitTable:
    """Build the sigma table of scheme ``name`` for ``arch``.

    Args:
        name: one of ``SCHEME_NAMES`` (hyphens accepted for underscores).
        arch: model shape, dropout, Pre-/Post-LN, r0 and residual-scaling knobs.
    Returns:
        the ``InitTable`` the predictor and ``apply_init_table`` both read.
    Raises:
        ValueError: as ``check_config`` (no knob is refused here: the caller knows what was explicit).
    """
    return replace(check_config(name, arch).build(arch), post_ln=arch.post_ln)
