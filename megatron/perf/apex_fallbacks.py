"""torch ``_foreach`` replacements for megatron-core's no-apex / no-Transformer-Engine multi-tensor fallbacks.

Flag: none; always, wherever apex and TE are missing (GPU too). Replaces:
``megatron.core.utils.local_multi_tensor_l2_norm`` / ``local_multi_tensor_scale``, which gradient clipping and
the fp16/bf16 param copies use without apex or TE: Python loops with one or two ops per parameter, and the norm
builds ``torch.tensor(list of 0-d tensors)``, a device-to-host copy per parameter on a GPU. Exactness: norm
<= 1e-6 relative (per-tensor 2-norms, then the 2-norm of those); scale bitwise (``dst = src * scale``).
Applies only where megatron fell back to its local versions: :func:`install` leaves apex's or TE's kernels alone.

The replacements have the same signature and return values but run one ``torch._foreach_*`` call per list
(a multi-tensor kernel on CUDA; a C++ loop on CPU), which matters for deep models with thousands of parameters.
"""

from __future__ import annotations

from typing import List, Sequence

import torch


def foreach_l2_norm(chunk_size, noop_flag, tensor_lists: Sequence[List[torch.Tensor]], per_tensor, *args):
    """Drop-in for ``amp_C.multi_tensor_l2norm`` (``per_tensor=False`` as megatron calls it): ([norm], None)."""
    norms = [n for tensors in tensor_lists if tensors for n in torch._foreach_norm(tensors)]
    if not norms:
        return torch.zeros(1, dtype=torch.float, device=noop_flag.device), None
    total = torch.linalg.vector_norm(torch.stack(norms).float())
    return total.reshape(1), None


def foreach_scale(chunk_size, noop_flag, tensor_lists: Sequence[List[torch.Tensor]], scale):
    """Drop-in for ``amp_C.multi_tensor_scale``: ``dst = src * scale`` for each pair (in place if src is dst)."""
    src, dst = tensor_lists[0], tensor_lists[1]
    if not src:
        return
    if all(s is d for s, d in zip(src, dst)):
        torch._foreach_mul_(dst, scale)
    elif scale == 1.0:
        torch._foreach_copy_(dst, src)
    else:
        torch._foreach_copy_(dst, torch._foreach_mul(src, scale))


def install() -> List[str]:
    """Swap megatron's local fallbacks for the foreach versions where they are in use; returns what changed."""
    from megatron.core import utils as mcore_utils
    from megatron.core.optimizer import clip_grads, optimizer

    changed = []
    for module, name, local, ours in (
        (clip_grads, "l2_norm_impl", mcore_utils.local_multi_tensor_l2_norm, foreach_l2_norm),
        (clip_grads, "multi_tensor_scale_impl", mcore_utils.local_multi_tensor_scale, foreach_scale),
        (optimizer, "multi_tensor_scale_impl", mcore_utils.local_multi_tensor_scale, foreach_scale),
    ):
        if getattr(module, name, None) is local:
            setattr(module, name, ours)
            changed.append(f"{module.__name__}.{name}")
    return changed
