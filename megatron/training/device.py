"""Where model inputs live, decided once for every micro-batch path (GPT, BERT, finetuning, evaluation).

Data loaders and megatron-core's ``broadcast_data`` hand over tensors on whatever device they were built
on; the model expects them on its own device. Every forward step moves its batch with
:func:`to_input_device`, at any tensor-parallel size, so no path depends on a collective doing it.
Tests redirect the target with :func:`input_device_override` (e.g. to ``torch.device("meta")``).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Mapping, Optional, Union

import torch

_override: Optional[torch.device] = None


def input_device() -> torch.device:
    """The override if set; else the CPU in CPU mode, else the current CUDA device (set per local rank)."""
    if _override is not None:
        return _override
    from megatron.perf import cpu_compat

    if cpu_compat.is_cpu_mode():
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


@contextlib.contextmanager
def input_device_override(device: Union[str, torch.device]) -> Iterator[torch.device]:
    """Send model inputs to ``device`` inside the block (tests: ``"meta"`` proves every path moves them)."""
    global _override
    previous, _override = _override, torch.device(device)
    try:
        yield _override
    finally:
        _override = previous


def to_input_device(batch: Mapping, dtype: Optional[torch.dtype] = None) -> dict:
    """A copy of ``batch`` with every tensor on :func:`input_device` (cast to ``dtype`` if given); others kept."""
    device = input_device()
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device=device, dtype=dtype or value.dtype, non_blocking=True)
        out[key] = value
    return out
