"""Megatron-style training on megatron-core: flags, initialisation, loop, checkpoints, tokenizers.

Entry scripts use ``from megatron.training import get_args, get_timers, get_tokenizer, pretrain, print_rank_0``
like upstream. ``pretrain`` is loaded on first use: the loop module imports this package's submodules.
"""

from megatron.training.global_vars import (get_args, get_timers, get_tokenizer, print_rank_0,  # noqa: F401
                                           print_rank_last)


def __getattr__(name):
    if name == "pretrain":
        from megatron.training.training import pretrain

        return pretrain
    raise AttributeError(f"module 'megatron.training' has no attribute {name!r}")
