"""Hugging Face checkpoints in and out of the stack: exact maps between transformers' BERT/GPT-2 and our models.

``session`` builds a TP1·PP1 model of a checkpoint in-process (any saved layout loads: dist_checkpointing stores
global tensors) or from Hugging Face shapes, ``hf_files`` reads and writes Hugging Face model folders, ``bert``
and ``gpt`` hold the tensor maps (with DSLM's λ/β and logit scale folded by :mod:`megatron.dslm.folding`).
A model that has no exact Hugging Face equivalent raises :class:`UnmappableModel`.
"""


class UnmappableModel(ValueError):
    """The model cannot be written as (or read from) the Hugging Face architecture exactly; the message says why."""
