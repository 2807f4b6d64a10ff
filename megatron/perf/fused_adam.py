"""torch's fused CPU AdamW kernel for megatron-core's torch-Adam fallback.

Flag: none; always in CPU mode (``--cpu`` or no CUDA device). Replaces: ``torch.optim.AdamW``'s per-parameter
Python loop, which megatron-core's no-apex/no-TE fallback gets (it builds AdamW without ``fused``/``foreach``).
Exactness: <= 1e-6 relative (the same AdamW arithmetic in one C++ kernel; compared with the loop in
tests/perf/test_apex_fallbacks_and_fused_adam.py). Applies in CPU mode only; on GPUs TE/apex FusedAdam or
torch's own defaults are used.
"""

from __future__ import annotations

import torch


def use_fused_cpu_adam(optimizer) -> None:
    """Run megatron's torch-Adam fallback with torch's fused CPU kernel.

    ``foreach`` is no better on CPU (no multi-tensor kernels there, so it loops too), and deep-narrow models
    have thousands of small parameters. Applied by :func:`megatron.perf.apply_to_optimizer` and again
    after a checkpoint load (the loaded param groups bring their own flags). Groups that are differentiable or
    hold a dtype the fused kernel lacks keep torch's loop.
    """
    for inner in getattr(optimizer, "chained_optimizers", None) or [optimizer]:
        torch_opt = getattr(inner, "optimizer", None)
        if not isinstance(torch_opt, (torch.optim.Adam, torch.optim.AdamW)):
            continue
        for group in torch_opt.param_groups:
            if group.get("differentiable") or any(p.dtype not in (torch.float32, torch.float16, torch.bfloat16,
                                                                   torch.float64) for p in group["params"]):
                continue
            group["foreach"] = False
            group["fused"] = True
