"""Process-wide handles for entry scripts (upstream's get_args()/get_tokenizer()); library code takes values."""

from __future__ import annotations

import torch

_ARGS = None
_TOKENIZER = None
_TIMERS = None


def set_args(args) -> None:
    global _ARGS
    _ARGS = args


def get_args():
    if _ARGS is None:
        raise RuntimeError("arguments are not initialised: call initialize_megatron() first")
    return _ARGS


def set_tokenizer(tokenizer) -> None:
    global _TOKENIZER
    _TOKENIZER = tokenizer


def get_tokenizer():
    if _TOKENIZER is None:
        raise RuntimeError("tokenizer is not initialised: call initialize_megatron() first")
    return _TOKENIZER


def get_timers():
    """megatron-core's Timers, as upstream's get_timers(): ``timers('name', log_level=2).start()``.

    Level 0 records only level-0 timers; deeper levels return megatron-core's no-op timer, so an entry
    script's timing calls cost nothing unless a caller lowers the threshold."""
    global _TIMERS
    if _TIMERS is None:
        from megatron.core.timers import Timers

        _TIMERS = Timers(int(getattr(_ARGS, "timing_log_level", 0) or 0), "minmax")
    return _TIMERS


def is_rank_0() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


def is_last_rank() -> bool:
    return (not torch.distributed.is_initialized()
            or torch.distributed.get_rank() == torch.distributed.get_world_size() - 1)


def print_rank_0(*message) -> None:
    if is_rank_0():
        print(*message, flush=True)


def print_rank_last(*message) -> None:
    if is_last_rank():
        print(*message, flush=True)
