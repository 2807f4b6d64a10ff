"""Token windows from a megatron-core indexed dataset: the data the r0 estimate reads."""

from __future__ import annotations

import os

import numpy as np

from megatron.core.datasets.indexed_dataset import IndexedDataset


def indexed_dataset_windows(path_prefix: str, seq_length: int, max_sequences: int):
    """Consecutive windows of ``seq_length`` tokens over the documents of a megatron indexed dataset."""
    for suffix in (".idx", ".bin"):
        if not os.path.exists(path_prefix + suffix):
            raise FileNotFoundError(f"no indexed dataset at {path_prefix!r} ({path_prefix + suffix} missing)")
    dataset = IndexedDataset(path_prefix)
    produced = 0
    buffer = np.zeros(0, dtype=np.int64)
    for idx in range(len(dataset)):
        buffer = np.concatenate([buffer, np.asarray(dataset[idx], dtype=np.int64)])
        while buffer.size >= seq_length:
            yield buffer[:seq_length]
            buffer = buffer[seq_length:]
            produced += 1
            if produced >= max_sequences:
                return
    if buffer.size >= 2 and produced < max_sequences:
        yield buffer
