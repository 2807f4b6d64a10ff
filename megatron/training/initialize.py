"""Process-group, model-parallel and RNG set-up: the first thing every entry point does.

Works under ``torchrun`` (reads RANK/WORLD_SIZE/LOCAL_RANK) and as a plain single process (world size 1,
a local TCP store), so tools and tests can build megatron-core objects without a launcher.
"""

from __future__ import annotations

import datetime
import os
import random
import socket

import numpy as np
import torch

from megatron import perf
from megatron.perf import cpu_compat


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def initialize_distributed(
    tensor_model_parallel_size: int = 1,
    pipeline_model_parallel_size: int = 1,
    force_cpu: bool = False,
    timeout_minutes: int = 10,
    get_embedding_ranks=None,
    get_position_embedding_ranks=None,
    store=None,
) -> None:
    """Create the default process group (NCCL on GPUs, gloo in CPU mode) and megatron's parallel groups.

    ``get_embedding_ranks`` / ``get_position_embedding_ranks``: megatron-core's choice of the pipeline ranks
    holding (position) embeddings, None for its default; ``store``: a torch.distributed Store to rendezvous
    through instead of MASTER_ADDR/MASTER_PORT (upstream's pretrain() keywords)."""
    from megatron.core import parallel_state

    perf.install_process_wide(force_cpu)  # CPU shim (CPU mode only), foreach multi-tensor fallbacks
    if not torch.distributed.is_initialized():
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
        if not cpu_compat.is_cpu_mode():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        rendezvous = {} if store is None else {
            "store": store, "rank": int(os.environ["RANK"]), "world_size": int(os.environ["WORLD_SIZE"])}
        torch.distributed.init_process_group(
            backend=cpu_compat.default_backend(),
            timeout=datetime.timedelta(minutes=timeout_minutes),
            **rendezvous,
        )
    world = torch.distributed.get_world_size()
    model_parallel = tensor_model_parallel_size * pipeline_model_parallel_size
    if world % model_parallel != 0:
        raise ValueError(
            f"world size {world} is not divisible by tensor ({tensor_model_parallel_size}) x pipeline "
            f"({pipeline_model_parallel_size}) parallel size"
        )
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=tensor_model_parallel_size,
        pipeline_model_parallel_size=pipeline_model_parallel_size,
        distributed_timeout_minutes=timeout_minutes,
        get_embedding_ranks=get_embedding_ranks,
        get_position_embedding_ranks=get_position_embedding_ranks,
    )


def set_random_seed(seed: int) -> None:
    """Seed python/numpy/torch and megatron's model-parallel RNG tracker.

    Every rank gets the same python/numpy/torch seed (data order does not depend on it); megatron derives the
    tensor-parallel dropout streams from it. Parameter values do not depend on these streams at all: they are
    drawn by ``megatron.dslm.mcore.weight_init`` from generators keyed on (seed, weight name, layer).
    """
    from megatron.core import tensor_parallel

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed, force_reset_rng=True)


def destroy_distributed() -> None:
    from megatron.core import parallel_state

    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
