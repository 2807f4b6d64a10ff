"""CPU mode on a GPU host touches no CUDA state: no pinned batches, no CUDA RNG restore on resume."""

from __future__ import annotations

import types

import pytest
import torch


@pytest.fixture
def cpu_mode_on_gpu_host(monkeypatch):
    from megatron.perf import cpu_compat

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cpu_compat, "_ENABLED", True)


@pytest.mark.usefixtures("cpu_mode_on_gpu_host")
def test_data_iterator_does_not_pin_memory(monkeypatch):
    from megatron.core import parallel_state
    from megatron.training.data_iterators import build_data_iterator

    seen = {}

    class RecordingLoader:
        def __init__(self, dataset, **kwargs):
            seen.update(kwargs)

        def __iter__(self):
            return iter([{"tokens": torch.zeros(1)}])

    monkeypatch.setattr(torch.utils.data, "DataLoader", RecordingLoader)
    monkeypatch.setattr(parallel_state, "get_data_parallel_rank", lambda: 0)
    monkeypatch.setattr(parallel_state, "get_data_parallel_world_size", lambda: 1)
    args = types.SimpleNamespace(micro_batch_size=1, num_workers=0, seed=1)
    batches = list(build_data_iterator(list(range(4)), 0, args))
    assert batches and seen["pin_memory"] is False


@pytest.mark.usefixtures("cpu_mode_on_gpu_host")
def test_resume_does_not_restore_cuda_rng(monkeypatch):
    import random

    import numpy as np

    from megatron.core import tensor_parallel
    from megatron.training import checkpointing

    def refuse(*_args, **_kwargs):
        raise AssertionError("CUDA RNG restored in CPU mode")

    monkeypatch.setattr(torch.cuda, "set_rng_state", refuse)
    state = {"random": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
             "cuda": torch.zeros(16, dtype=torch.uint8),
             "tracker": tensor_parallel.get_cuda_rng_tracker().get_states()}
    checkpointing._set_rng_state(state)
    assert torch.equal(torch.get_rng_state(), state["torch"])
