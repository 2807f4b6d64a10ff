"""torch's fused CPU AdamW kernel for megatron-core's torch-Adam fallback (CPU mode)."""

from __future__ import annotations

import torch


def use_fused_cpu_adam(optimizer) -> None:
    """Run megatron's torch-Adam fallback with torch's fused CPU kernel.

    megatron-core builds ``torch.optim.AdamW`` without ``fused``/``foreach`` when TE and apex are missing, and
    torch then takes its per-parameter Python loop on CPU (``foreach`` is no better there: CPU has no multi-tensor
    kernels, so it loops too). Deep-narrow models have thousands of small parameters, so that loop cost
    ~60 ms per step at 96x64. ``fused=True`` runs one C++ kernel per parameter with the same AdamW arithmetic.
    Applied in CPU mode only (by :func:`megatron.training.perf.apply_to_optimizer`); on GPUs TE/apex FusedAdam
    or torch's own defaults are used.
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
