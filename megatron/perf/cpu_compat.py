"""CPU compatibility for megatron-core (gloo backend): the only place this project patches torch or megatron.

Flag: ``--cpu`` (or ``MEGATRON_FORCE_CPU=1``), or automatically when no CUDA device is available. Replaces:
megatron-core's CUDA touch points (0.16 and 0.19) -- it allocates on ``torch.cuda.current_device()``, seeds and
forks CUDA RNG states, synchronises CUDA streams, and asserts ``torch.cuda.*Tensor`` type names in the optimizer.
Exactness: bitwise (only device placement and type names change). Applies in CPU mode only: with CUDA present
and no ``--cpu``, :func:`enable_cpu_mode` is never called and nothing is patched (NCCL, bf16 and fused kernels
take their normal paths). Not a speed path, but listed in ``megatron.perf.SPEED_PATHS`` because it is
the other thing that swaps megatron-core behaviour.

Redirecting exactly those touch points to the CPU lets the *real* engine (its tensor/pipeline-parallel layers,
schedules, DDP, optimizer and dist_checkpointing) run under gloo: what the tests and laptop debugging use.

Patch by patch (each was shown necessary; see docs/cpu_mode.md):

1. ``torch.cuda.current_device`` -> ``torch.device("cpu")``: megatron allocates buffers with
   ``device=torch.cuda.current_device()``.
2. ``torch.cuda.synchronize`` -> no-op: pipeline schedules and checkpointing call it.
3. CUDA RNG primitives -> the CPU generator: ``torch.cuda.get_rng_state``, ``torch.cuda.random.get_rng_state``,
   ``torch.cuda.manual_seed`` and megatron's ``tensor_parallel.random._set_cuda_rng_state``. Megatron's own
   RNG tracker is kept (``tensor_parallel/layers.py`` imported it by name), so activation recompute with
   dropout reproduces exactly. Its "CPU RNG state changed" warning is meaningless here; its logger is set to ERROR.
4. CUDA-flavoured tensor calls -> CPU: (a) torch's factory functions (``torch.zeros``, ``torch.tensor``,
   ``torch.empty_like`` ...) get a thin wrapper that rewrites a ``device="cuda..."`` keyword to CPU (the
   pipeline schedules, optimizer, grad scaler and checkpoint exchange allocate with a literal
   ``device="cuda"``); (b) ``Tensor.cuda()`` is the identity; (c) ``Tensor.type()`` answers with the
   ``torch.cuda.*`` name and maps ``torch.cuda.*`` type strings back (the optimizer and clip_grads assert CUDA
   tensor types). Only these entry points are wrapped -- not every op -- so model compute pays nothing (a
   global ``TorchFunctionMode`` doing the same slows every small op).

5. megatron-core's torch LayerNorm (``WrappedTorchNorm``, its norm without apex / Transformer Engine) refuses
   ``sequence_parallel``: with it on, the same torch norm is built and its weight and bias are marked
   ``sequence_parallel`` as apex's and TE's norms mark theirs, so ``finalize_model_grads`` all-reduces their
   grads (each TP rank saw only its sequence slice) over the TP group. Exact: the norm is per token. torch
   2.13's gloo has every collective the sequence-parallel and DDP paths call (``all_gather_into_tensor``,
   ``reduce_scatter_tensor`` with SUM and AVG, ``_coalescing_manager``), so nothing else is patched for them.
6. ``torch.cuda.current_stream`` -> a stream stand-in whose waits and syncs do nothing: megatron-core 0.19's DDP
   grad-sync asks for the current stream on every bucket (to wait on CUDA-graph events that never exist here);
   0.16 does not call it on the CPU path. CPU ops run in program order, so there is nothing to wait for.

Consequence worth knowing: the CPU and "CUDA" RNG streams are one generator, so dropout masks differ from a
GPU run with the same seed (losses are still identical across TP/PP layouts on CPU).
"""

from __future__ import annotations

import functools
import logging
import os

import torch

_ENABLED = False


def cpu_mode_wanted(force_cpu: bool = False) -> bool:
    """CPU mode is used when asked for (``--cpu``) or when this machine has no usable CUDA device."""
    return force_cpu or os.environ.get("MEGATRON_FORCE_CPU") == "1" or not torch.cuda.is_available()


def is_cpu_mode() -> bool:
    return _ENABLED


# Factory functions megatron-core calls with device="cuda" (module attributes: patched where they are looked up).
_FACTORY_FUNCTIONS = ("empty", "zeros", "ones", "full", "tensor", "as_tensor", "arange", "empty_like",
                      "zeros_like", "ones_like", "full_like", "rand", "randn", "randint", "randperm", "eye",
                      "linspace", "empty_strided")


def _is_cuda_device(device) -> bool:
    if isinstance(device, str):
        return device.startswith("cuda")
    if isinstance(device, torch.device):
        return device.type == "cuda"
    return isinstance(device, int) and not isinstance(device, bool)  # an ordinal means a CUDA device


def _cpu_factory(fn):
    @functools.wraps(fn)
    def factory(*args, **kwargs):
        if "device" in kwargs and _is_cuda_device(kwargs["device"]):
            kwargs["device"] = "cpu"
        return fn(*args, **kwargs)
    factory.__wrapped_for_cpu__ = True
    return factory


def _to_cpu_type_name(name: str) -> str:
    return name.replace("torch.cuda.", "torch.", 1) if name.startswith("torch.cuda.") else name


def _make_type(original):
    def tensor_type(self, dtype=None, non_blocking=False, **kwargs):
        if dtype is None:  # query: report the CUDA name megatron asserts on
            name = original(self)
            return name if name.startswith("torch.cuda.") else name.replace("torch.", "torch.cuda.", 1)
        if isinstance(dtype, str):
            dtype = _to_cpu_type_name(dtype)
        return original(self, dtype, non_blocking, **kwargs)
    return tensor_type


class _HostStream:
    """What ``torch.cuda.current_stream()`` answers in CPU mode: every wait, record and sync is a no-op."""

    def wait_event(self, *_a, **_k):
        return None

    wait_stream = synchronize = record_event = wait_event

    def query(self) -> bool:
        return True


def enable_cpu_mode() -> None:
    """Apply patches 1-6 (idempotent). Call before building any megatron-core object."""
    global _ENABLED
    if _ENABLED:
        return
    from megatron.core.tensor_parallel import random as mcore_random

    cpu = torch.device("cpu")
    torch.cuda.current_device = lambda: cpu  # 1
    torch.cuda.synchronize = lambda *a, **k: None  # 2

    def _get_rng_state(*_a, **_k):  # 3
        return torch.get_rng_state()

    torch.cuda.get_rng_state = _get_rng_state
    torch.cuda.random.get_rng_state = _get_rng_state
    # torch.manual_seed itself calls torch.cuda.manual_seed_all: seed the CPU generator directly.
    torch.cuda.manual_seed = lambda seed: torch.default_generator.manual_seed(int(seed))
    torch.cuda.manual_seed_all = lambda seed: None
    mcore_random._set_cuda_rng_state = lambda state, *a, **k: torch.set_rng_state(state)
    # The tracker's fork warns whenever the CPU generator changed inside it, which here is every dropout. A
    # logger level (not a filter) skips building the record at every fork. The module logs nothing else.
    logging.getLogger(mcore_random.__name__).setLevel(logging.ERROR)

    for name in _FACTORY_FUNCTIONS:  # 4a
        fn = getattr(torch, name)
        if not getattr(fn, "__wrapped_for_cpu__", False):
            setattr(torch, name, _cpu_factory(fn))
    torch.Tensor.cuda = lambda self, *a, **k: self  # 4b
    torch.Tensor.type = _make_type(torch.Tensor.type)  # 4c
    _allow_sequence_parallel_torch_norm()  # 5
    host_stream = _HostStream()
    torch.cuda.current_stream = lambda *a, **k: host_stream  # 6
    _ENABLED = True


def _allow_sequence_parallel_torch_norm() -> None:
    import copy

    from megatron.core.transformer.torch_norm import WrappedTorchNorm

    original = WrappedTorchNorm.__new__

    def new(cls, config, hidden_size, *args, **kwargs):
        if not config.sequence_parallel:
            return original(cls, config, hidden_size, *args, **kwargs)
        plain = copy.copy(config)  # a shallow copy: TransformerConfig's checks do not run again
        plain.sequence_parallel = False
        norm = original(cls, plain, hidden_size, *args, **kwargs)
        for param in norm.parameters():
            param.sequence_parallel = True
        return norm

    WrappedTorchNorm.__new__ = staticmethod(new)


def default_backend() -> str:
    """gloo in CPU mode, NCCL otherwise."""
    return "gloo" if _ENABLED else "nccl"
