"""Checkpoints with megatron.core.dist_checkpointing: model, optimizer, scheduler, RNG, iteration and args.

Layout: ``<save>/iter_0000010/`` (a dist_checkpointing directory) and ``<save>/latest_checkpointed_iteration.txt``.
A checkpoint is written to ``iter_XXXXXXX.tmp``; once every rank finished, its files are synced to disk and
listed with their checksums in ``checksums.json`` (:mod:`megatron.training.checkpoint_checksums`), the folder is
synced and renamed into place, and only then is the tracker replaced (write, sync, rename, sync: see
:mod:`megatron.training.durable`): a crash or power loss mid-save leaves the previous checkpoint as "latest".
``--load`` verifies the checkpoint the tracker names before reading it; a damaged one is one error line, or with
``--ckpt-fallback-to-verified`` the newest older checkpoint that verifies is loaded instead.
``--save-keep-last N`` removes older checkpoints after each save (:mod:`megatron.training.checkpoint_retention`).
Because the state is sharded by global tensor keys, a checkpoint saved at one TP/PP/VP layout loads at another
(RNG state is restored only when the layout is the same). Distributed-optimizer state is stored per DP bucket
(megatron-core's ``dp_reshardable``): it loads at another DP size, but only at the saved TP/PP layout.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import sys
from typing import List

import numpy as np
import torch

from megatron.training import checkpoint_checksums, durable
from megatron.training.validate import ConfigError

TRACKER_FILE = "latest_checkpointed_iteration.txt"
_ITER_DIR = re.compile(r"iter_(\d{7})")
# What a torch_dist checkpoint cannot load without (checked when it has no checksums.json to say so).
from megatron.training.engine_compat import CHECKPOINT_REQUIRED_FILES as _REQUIRED_FILES  # noqa: E402
FALLBACK_FLAG = "--ckpt-fallback-to-verified"
CHECKPOINT_VERSION = 1
# The default distributed-optimizer format is rejected on load by megatron-core 0.16; this one round-trips.
_OPTIMIZER_METADATA = {"distrib_optim_sharding_type": "dp_reshardable"}


def checkpoint_dir(root: str, iteration: int) -> str:
    return os.path.join(root, f"iter_{iteration:07d}")


class DamagedCheckpoint(ConfigError):
    """The checkpoint ``--load`` would read is incomplete or its files differ from their checksums."""


def read_tracker(root: str):
    """The last fully written iteration under ``root`` or None."""
    path = os.path.join(root, TRACKER_FILE)
    if not os.path.isfile(path):
        return None
    text = open(path).read().strip()
    if not text.isdigit():
        raise DamagedCheckpoint(f"{path} is corrupt (expected an iteration number, found {text!r})")
    return int(text)


def published_iterations(root: str) -> List[int]:
    """Iterations of the checkpoint folders under ``root`` (not those still being written), ascending."""
    if not os.path.isdir(root):
        return []
    found = (_ITER_DIR.fullmatch(name) for name in os.listdir(root))
    return sorted(int(m.group(1)) for m in found if m and os.path.isdir(os.path.join(root, m.group(0))))


def unwrap_model(chunk):
    """The megatron-core model inside DDP / FSDP / Float16Module wrappers: megatron-core's ``unwrap_model``,
    imported on call so that importing this module stays free of megatron-core."""
    from megatron.core.utils import unwrap_model as core_unwrap_model

    return core_unwrap_model(chunk)


def _barrier():
    if torch.distributed.is_initialized():
        torch.distributed.barrier()


def _rank() -> int:
    return torch.distributed.get_rank() if torch.distributed.is_initialized() else 0


def _rng_state() -> dict:
    from megatron.core import tensor_parallel
    from megatron.perf import cpu_compat

    return {
        "random": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": None if cpu_compat.is_cpu_mode() else torch.cuda.get_rng_state(),
        "tracker": tensor_parallel.get_cuda_rng_tracker().get_states(),
    }


def _set_rng_state(state: dict) -> None:
    from megatron.core import tensor_parallel
    from megatron.perf import cpu_compat

    random.setstate(state["random"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and not cpu_compat.is_cpu_mode() and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    tensor_parallel.get_cuda_rng_tracker().set_states(state["tracker"])


def _rng_sharded_object(state):
    from megatron.core import parallel_state as ps
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    return ShardedObject(
        "rng_state", state,
        (ps.get_pipeline_model_parallel_world_size(), ps.get_tensor_model_parallel_world_size()),
        (ps.get_pipeline_model_parallel_rank(), ps.get_tensor_model_parallel_rank()),
        replica_id=ps.get_data_parallel_rank(),
    )


def _parallel_layout() -> list:
    """[TP, PP] (and the chunks per pipeline rank under the interleaved pipeline): RNG streams are per layout."""
    from megatron.core import parallel_state as ps

    layout = [ps.get_tensor_model_parallel_world_size(), ps.get_pipeline_model_parallel_world_size()]
    vp = ps.get_virtual_pipeline_model_parallel_world_size()
    return layout + [vp] if vp else layout


def _chunk_names(model_chunks) -> list:
    """State-dict entries of the chunks: ``model``, or upstream's ``model0``, ``model1``... per virtual stage.

    Only the nesting differs: every tensor is stored under its global key (layers stacked by global layer
    number), so a checkpoint of either form loads at any TP/PP/VP layout."""
    return ["model"] if len(model_chunks) == 1 else [f"model{i}" for i in range(len(model_chunks))]


def _model_sharded_state_dicts(model_chunks) -> dict:
    return {name: unwrap_model(chunk).sharded_state_dict()
            for name, chunk in zip(_chunk_names(model_chunks), model_chunks)}


def _plain_args(args) -> dict:
    """JSON-like copy of the flags (for inspection and for finetuning to read the pretrained shape)."""
    if args is None:
        return {}
    return {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, list, tuple, type(None)))}


def save_checkpoint(iteration: int, model_chunks, optimizer, scheduler, save_dir: str, args=None,
                    extra_state: dict | None = None) -> str:
    """Write a checkpoint of ``iteration`` under ``save_dir`` and publish it atomically; returns its path."""
    from megatron.core import dist_checkpointing

    final = checkpoint_dir(save_dir, iteration)
    tmp = final + ".tmp"
    if _rank() == 0:
        os.makedirs(save_dir, exist_ok=True)
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
        os.makedirs(tmp)
    _barrier()

    model_sd = _model_sharded_state_dicts(model_chunks)
    state = {
        "checkpoint_version": CHECKPOINT_VERSION,
        "iteration": iteration,
        "args": _plain_args(args),
        "parallel_layout": _parallel_layout(),
        **model_sd,
        "rng_state": _rng_sharded_object(_rng_state()),
    }
    if optimizer is not None:
        state["optimizer"] = optimizer.sharded_state_dict(model_sd, metadata=_OPTIMIZER_METADATA)
    if scheduler is not None:
        state["opt_param_scheduler"] = scheduler.state_dict()
    if extra_state:
        state["extra"] = extra_state
    dist_checkpointing.save(state, tmp, content_metadata=_OPTIMIZER_METADATA)
    _barrier()
    checkpoint_checksums.seal(tmp)  # every rank syncs and hashes its share; rank 0 writes checksums.json

    if _rank() == 0:
        _publish(tmp, final, save_dir, iteration)
        keep_last = getattr(args, "save_keep_last", None)
        if keep_last:
            _remove_old_checkpoints(save_dir, iteration, keep_last)
    _barrier()
    return final


def _publish(tmp: str, final: str, save_dir: str, iteration: int) -> None:
    """Rename the sealed ``tmp`` folder to ``final``, then point the tracker at it, each step on disk first."""
    if os.path.exists(final):
        shutil.rmtree(final)
    durable.replace(tmp, final)
    durable.write_text(os.path.join(save_dir, TRACKER_FILE), str(iteration))


def _remove_old_checkpoints(save_dir: str, iteration: int, keep_last: int) -> None:
    from megatron.training import checkpoint_retention

    for old in checkpoint_retention.to_remove(published_iterations(save_dir), iteration, keep_last):
        shutil.rmtree(checkpoint_dir(save_dir, old), ignore_errors=True)
        print(f"> removed {checkpoint_dir(save_dir, old)} (--save-keep-last {keep_last})", flush=True)


def _inner_optimizers(optimizer):
    return getattr(optimizer, "chained_optimizers", None) or [optimizer]


def load_checkpoint(model_chunks, optimizer, scheduler, load_dir: str, *, load_optim: bool = True,
                    load_rng: bool = True, finetune: bool = False, strict: bool = True, args=None):
    """Restore the latest checkpoint under ``load_dir``; returns (iteration, extra_state).

    ``finetune=True`` loads model weights only and returns iteration 0. With no checkpoint present the
    model is left as initialised and (0, {}) is returned. ``args`` (the run's flags): the model's shape and the
    learning-rate schedule are checked against the checkpoint's first (:mod:`megatron.training.resume_checks`).
    """
    from megatron.training import resume_checks
    from megatron.core import dist_checkpointing

    iteration = read_tracker(load_dir)
    if iteration is None:
        if finetune:
            raise FileNotFoundError(f"no checkpoint found under {load_dir} ({TRACKER_FILE} missing)")
        return 0, {}
    ckpt, common = verified_checkpoint(load_dir, iteration,
                                       fallback=bool(getattr(args, "ckpt_fallback_to_verified", False)))
    if args is not None:
        resume_checks.check_model_shape(common.get("args") or {}, args, ckpt)
        if scheduler is not None and not finetune and "opt_param_scheduler" in common:
            resume_checks.check_schedule(common["opt_param_scheduler"], scheduler, args, ckpt)

    model_sd = _model_sharded_state_dicts(model_chunks)
    request = dict(model_sd)
    want_optim = load_optim and not finetune and optimizer is not None and "optimizer" in common
    same_layout = list(common.get("parallel_layout", [])) == _parallel_layout()
    saved_optim = common.get("optimizer")
    if (want_optim and not same_layout and isinstance(saved_optim, dict)
            and saved_optim.get("param_state_sharding_type") == "dp_reshardable"):
        from megatron.training.validate import ConfigError

        # megatron-core would fail deep inside the load with a KeyError on a bucket key.
        raise ConfigError(f"{ckpt} holds distributed-optimizer state, which reshards across data-parallel ranks "
                          f"only: saved at [TP, PP] {list(common['parallel_layout'])}, loading at "
                          f"{_parallel_layout()}; load at the saved layout or pass --no-load-optim")
    if want_optim:
        for inner in _inner_optimizers(optimizer):
            if hasattr(inner, "_init_optimizer_states_with_dummy_values"):
                inner._init_optimizer_states_with_dummy_values()
        request["optimizer"] = optimizer.sharded_state_dict(model_sd, is_loading=True,
                                                            metadata=_OPTIMIZER_METADATA)
    want_rng = load_rng and not finetune and same_layout
    if want_rng:
        request["rng_state"] = _rng_sharded_object(None)

    with torch.no_grad():
        loaded = dist_checkpointing.load(request, ckpt)
    for name, chunk in zip(model_sd, model_chunks):
        unwrap_model(chunk).load_state_dict(loaded[name], strict=strict)
    if finetune:
        return 0, {}
    if want_optim:
        # The distributed optimizer copies into its fp32 shards, which are views of the (grad-requiring)
        # model params; megatron-core's dp_reshardable load does not disable grad mode itself.
        run_lrs = _group_lrs(optimizer)
        with torch.no_grad():
            optimizer.load_state_dict(loaded["optimizer"])
        _restore_per_param_steps(optimizer)
        if args is not None and getattr(args, "override_opt_param_scheduler", False):
            _set_group_lrs(optimizer, run_lrs)  # the param groups carry max/min lr: keep this run's
    if scheduler is not None and "opt_param_scheduler" in common:
        scheduler.load_state_dict(common["opt_param_scheduler"])
    if want_rng:
        _set_rng_state(loaded["rng_state"])
    return int(common["iteration"]), common.get("extra", {})


def _say(line: str) -> None:
    """One note or warning line on stderr, from rank 0."""
    if _rank() == 0:
        print(line, file=sys.stderr, flush=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0] if text else ''}"


def checkpoint_problem(ckpt: str):
    """(None, common state dict) if ``ckpt`` can be loaded, else (what is wrong, None): the folder or a file
    the format needs is missing, a file differs from ``checksums.json``, or ``common.pt`` does not unpickle.
    Collective under torch.distributed: call on every rank."""
    from megatron.core import dist_checkpointing

    if not os.path.isdir(ckpt):
        return "the folder is missing", None
    if checkpoint_checksums.has_manifest(ckpt):
        problem = checkpoint_checksums.verify(ckpt)
        if problem:
            return problem, None
    missing = [name for name in _REQUIRED_FILES if not os.path.isfile(os.path.join(ckpt, name))]
    if missing:
        return f"{missing[0]}: missing", None
    try:
        return None, dist_checkpointing.load_common_state_dict(ckpt)
    except Exception as exc:  # a damaged pickle raises anything from EOFError to UnpicklingError to KeyError
        return f"common.pt: unreadable ({_first_line(exc)})", None


def verified_checkpoint(load_dir: str, iteration: int, fallback: bool = False):
    """(checkpoint folder, its common state dict) for the checkpoint of ``iteration`` under ``load_dir``.

    A checkpoint without ``checksums.json`` (saved before checkpoints carried one) loads with a note. A damaged one
    raises :class:`DamagedCheckpoint` naming the checkpoint and the file; with ``fallback`` the newest older
    checkpoint that has checksums and verifies is returned instead, with a warning line."""
    ckpt = checkpoint_dir(load_dir, iteration)
    problem, common = checkpoint_problem(ckpt)
    if problem is None:
        if not checkpoint_checksums.has_manifest(ckpt):
            _say(f"note: --load {load_dir}: {ckpt} has no {checkpoint_checksums.MANIFEST} (saved before "
                 "checkpoints carried checksums): loading it unverified")
        return ckpt, common
    damaged = f"--load {load_dir}: checkpoint {ckpt} is damaged: {problem}"
    if not fallback:
        raise DamagedCheckpoint(f"{damaged}; pass {FALLBACK_FLAG} to load the newest older checkpoint that "
                                "verifies")
    rejected = []
    for older in reversed([i for i in published_iterations(load_dir) if i < iteration]):
        path = checkpoint_dir(load_dir, older)
        if not checkpoint_checksums.has_manifest(path):
            rejected.append(f"{os.path.basename(path)}: no {checkpoint_checksums.MANIFEST}")
            continue
        why, common = checkpoint_problem(path)
        if why is None:
            _say(f"warning: --load {load_dir}: checkpoint {ckpt} is damaged ({problem}); loading {path}, the newest "
                 f"older checkpoint that verifies ({FALLBACK_FLAG})")
            return path, common
        rejected.append(f"{os.path.basename(path)}: {why}")
    raise DamagedCheckpoint(f"{damaged}; {FALLBACK_FLAG}: no older checkpoint verifies"
                            + (f" ({'; '.join(rejected)})" if rejected else " (there is none)"))


def _group_lrs(optimizer) -> list:
    """Each param group's (max_lr, min_lr): megatron-core's scheduler reads them from the groups, which an
    optimizer load overwrites with the checkpoint's."""
    return [[(g.get("max_lr"), g.get("min_lr")) for g in inner.param_groups] for inner in _inner_optimizers(optimizer)]


def _set_group_lrs(optimizer, lrs: list) -> None:
    for inner, groups in zip(_inner_optimizers(optimizer), lrs):
        for group, (max_lr, min_lr) in zip(inner.param_groups, groups):
            if max_lr is not None:
                group["max_lr"] = max_lr
            if min_lr is not None:
                group["min_lr"] = min_lr


def _restore_per_param_steps(optimizer) -> None:
    """Give every Adam state its own ``step`` tensor from the loaded param_groups.

    The distributed optimizer's load path leaves ``step`` shared (and reset to 1) on the torch-Adam path,
    which silently changes Adam's bias correction and makes the resumed loss curve diverge.
    """
    for inner in _inner_optimizers(optimizer):
        torch_opt = getattr(inner, "optimizer", None)
        if torch_opt is None:
            continue
        for group in torch_opt.param_groups:
            step = group.get("step")
            if step is None:
                continue
            for p in group["params"]:
                st = torch_opt.state.get(p)
                if st is not None and "step" in st:
                    st["step"] = torch.tensor(float(step), dtype=torch.float32)


def load_args_from_checkpoint(load_dir: str) -> dict:
    """The flags a checkpoint was trained with (e.g. so finetuning can check the model shape)."""
    from megatron.core import dist_checkpointing

    iteration = read_tracker(load_dir)
    if iteration is None:
        raise FileNotFoundError(f"no checkpoint found under {load_dir}")
    return dist_checkpointing.load_common_state_dict(checkpoint_dir(load_dir, iteration)).get("args", {})
