"""Megatron-style training on megatron-core: flags, initialisation, loop, checkpoints, tokenizers.

Entry scripts use ``from megatron.training import get_args, get_tokenizer, print_rank_0`` like upstream.
"""

from megatron.training.global_vars import get_args, get_tokenizer, print_rank_0, print_rank_last  # noqa: F401
