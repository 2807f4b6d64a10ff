"""Which samples a finetuning epoch visits and what its validation files are called.

Kept free of torch and megatron so that a peer implementation (the transformers side of
``scripts/peer_finetune.py``) can visit exactly the same batches and name the same results.
"""

from __future__ import annotations

import os

import numpy as np


def epoch_batches(num_samples: int, global_batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """[iters_per_epoch, global_batch] sample indices: a fresh permutation per epoch, the tail dropped."""
    order = np.random.RandomState((seed * 1_000_003 + epoch) % 2**32).permutation(num_samples)
    iters = num_samples // global_batch_size
    return order[: iters * global_batch_size].reshape(iters, global_batch_size)


def validation_name(path) -> str:
    """The name a validation file (its stem) or folder (``parent_folder``) is reported under."""
    base = os.path.basename(os.path.normpath(str(path)))
    parent = os.path.basename(os.path.dirname(os.path.normpath(str(path))))
    return os.path.splitext(base)[0] if "." in base else f"{parent}_{base}"
