"""Gradients that live in megatron-core DDP's contiguous grad buffer from the start, and a grad norm over it.

Flag: ``--grad-buffer-impl direct`` (``megatron`` = stock). Replaces: megatron DDP's per-parameter Python hooks
on the autograd accumulators (``main_grad.add_(grad); grad = None`` after backward) and its optimizers'
list-based grad norm and clip over every per-parameter grad. Exactness: bitwise gradients; grad norm <= 1e-7
relative (tests/perf/test_grad_buffer.py). Applies with fp32 grads in fp32 buffers, no overlapped reduction,
no fused grad accumulation, no CUDA graphs; the flat norm also needs TP = PP = 1. Everything else runs
megatron-core's own code.

``GradBufferDDP`` makes each ``param.grad`` a view of its ``main_grad`` (what torch DDP calls
``gradient_as_bucket_view``): autograd's own C++ accumulator then adds into the buffer in place, with the same
result bit for bit, and megatron's hooks are dropped. :class:`FlatGradNormOptimizer` computes the grad norm as
one chunked reduction over the buffer and clips with one multiply. Deep-narrow models pay megatron's way per
parameter, thousands of times a step.
"""

from __future__ import annotations

from typing import List, Optional

import torch

from megatron.core.distributed import DistributedDataParallel


def grads_can_alias_buffer(config, ddp_config, params: List[torch.nn.Parameter]) -> bool:
    """Whether autograd may write straight into the buffer: megatron's hooks do nothing but the add there.

    Excluded: overlapped grad reduction (the hooks start bucket all-reduces), delayed wgrad and fused grad
    accumulation (kernels write ``main_grad`` themselves), CUDA graphs, and a buffer dtype other than the
    parameter's (bf16 params with fp32 grad reduction: the hook's add is also a cast). The distributed optimizer
    and its overlapped param all-gather are fine: the reduce-scatter acts on the buffer either way, and the
    all-gather's forward pre-hooks write the separate param buffer (``--overlap-param-gather`` also needs
    ``--overlap-grad-reduce``, as upstream, so from the command line the hooks are kept anyway).
    """
    if ddp_config.overlap_grad_reduce or getattr(ddp_config, "delay_wgrad_compute", False):
        return False
    if getattr(ddp_config, "use_megatron_fsdp", False) or getattr(config, "gradient_accumulation_fusion", False):
        return False
    if getattr(config, "cuda_graph_impl", "none") not in ("none", None) or getattr(config, "enable_cuda_graph", False):
        return False
    return all(p.main_grad.dtype == p.dtype for p in params)


class GradBufferDDP(DistributedDataParallel):
    """megatron-core DDP whose ``param.grad`` tensors are views of ``param.main_grad`` (when that is exact).

    If something resets a ``.grad`` (``Module.zero_grad``, an optimizer's ``zero_grad(set_to_none=True)``),
    autograd puts the next gradient in a fresh tensor; :meth:`finish_grad_sync` folds such a tensor into the
    buffer before the gradients are reduced, so results never depend on who touched ``.grad``.
    """

    def __init__(self, config, ddp_config, module, *args, grads_in_buffer: bool = True, **kwargs):
        self.grads_in_buffer = False  # read by the hooks megatron registers inside __init__
        super().__init__(config, ddp_config, module, *args, **kwargs)
        if not (grads_in_buffer and grads_can_alias_buffer(config, ddp_config, self.params_with_grad)):
            return
        self.grads_in_buffer = True
        # megatron keeps the accumulator nodes alive only so that its hooks stay registered; a dropped node
        # takes its hooks with it and autograd builds a hook-free one at the next forward.
        self.grad_accs.clear()
        self._alias_grads()

    def _make_backward_post_hook(self, param: torch.nn.Parameter):
        stock_hook = super()._make_backward_post_hook(param)

        def hook(*unused):
            if not self.grads_in_buffer:  # grads already in the buffer: megatron's add would double them
                stock_hook(*unused)

        return hook

    def _alias_grads(self) -> None:
        for p in self.params_with_grad:
            if p.grad is not p.main_grad:
                p.grad = p.main_grad

    def zero_grad_buffer(self):
        super().zero_grad_buffer()  # zeroes the buffer in place, so the aliased grads too
        if self.grads_in_buffer:
            self._alias_grads()

    def finish_grad_sync(self, force_all_reduce: Optional[bool] = False):
        if self.grads_in_buffer:
            with torch.no_grad():
                for p in self.params_with_grad:
                    g = p.grad
                    if g is not p.main_grad:
                        if g is not None:
                            p.main_grad.add_(g)
                        p.grad = p.main_grad
        return super().finish_grad_sync(force_all_reduce=force_all_reduce)


def buffer_grad_norm(grad_data: List[torch.Tensor], chunk: int = 1 << 16) -> float:
    """2-norm over flat fp32 buffers, as accurate as megatron's per-parameter norms (~1e-7 relative).

    One ``vector_norm`` over millions of fp32 values accumulates a relative error of ~1e-4 on CPU; the norm of
    64k-element chunk norms does not, and still costs one ``_foreach_norm`` call.
    """
    pieces = [piece for g in grad_data for piece in g.split(chunk)]
    if not pieces:
        return 0.0
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(pieces))).item()


def flat_grad_norm_possible(optimizer, model_chunks) -> bool:
    """Whether the grad norm and clip may be taken on the DDP buffers with megatron's result.

    Exact when a ``ChainedOptimizer`` holds one ``FP32Optimizer`` whose parameters are exactly the buffers'
    parameters, none shared or a tensor-parallel duplicate, and the grad statistics group has one rank (no
    tensor or pipeline parallelism). Data parallelism is fine: the buffers hold the already reduced gradients.
    """
    from megatron.core import tensor_parallel
    from megatron.core.optimizer.optimizer import ChainedOptimizer, FP32Optimizer
    from megatron.core.transformer.module import param_is_not_shared

    if not isinstance(optimizer, ChainedOptimizer) or len(optimizer.chained_optimizers) != 1:
        return False
    inner = optimizer.chained_optimizers[0]
    cfg = inner.config
    if (not isinstance(inner, FP32Optimizer) or inner.is_stub_optimizer
            or getattr(cfg, "use_precision_aware_optimizer_no_fp8_or_ds_fp8", False)
            or getattr(cfg, "overlap_param_gather_with_optimizer_step", False)):
        return False
    if torch.distributed.get_world_size(inner.get_grad_stats_parallel_group()) != 1:
        return False
    if not all(isinstance(c, GradBufferDDP) and c.grads_in_buffer and not c.expert_parallel_buffers
               for c in model_chunks):
        return False
    params = inner.get_parameters()
    buffer_params = [p for c in model_chunks for p in c.params_with_grad]
    if {id(p) for p in params} != {id(p) for p in buffer_params} or len(params) != len(buffer_params):
        return False
    return all(param_is_not_shared(p) and tensor_parallel.param_is_not_tensor_parallel_duplicate(p)
               for p in params)


class FlatGradNormOptimizer:
    """A megatron-core optimizer whose ``step()`` takes the grad norm and clips on the flat DDP buffers.

    Everything but ``step`` is the wrapped optimizer's (attribute access is delegated). The step keeps
    ``ChainedOptimizer.step``'s order and return value: prepare, norm, clip, zeros, update.
    """

    def __init__(self, optimizer, model_chunks):
        self.wrapped = optimizer
        self._grad_data = [b.grad_data for c in model_chunks for b in c.buffers]
        self._clip_grad = optimizer.chained_optimizers[0].config.clip_grad

    def __getattr__(self, name):
        return getattr(self.wrapped, name)

    @torch.no_grad()
    def step(self):
        opt = self.wrapped
        if opt.prepare_grads():
            return False, None, None
        grad_norm = buffer_grad_norm(self._grad_data)
        if self._clip_grad > 0.0:
            clip_coeff = self._clip_grad / (grad_norm + 1.0e-6)  # megatron's clip_grad_by_total_norm_fp32
            if clip_coeff < 1.0:
                torch._foreach_mul_(self._grad_data, clip_coeff)
        num_zeros = opt.count_zeros() if opt.config.log_num_zeros_in_grad else None
        return opt.step_with_ready_grads(), grad_norm, num_zeros


def with_flat_grad_norm(optimizer, model_chunks):
    """``optimizer`` wrapped in :class:`FlatGradNormOptimizer` where that is exact, else ``optimizer`` itself."""
    if not flat_grad_norm_possible(optimizer, model_chunks):
        return optimizer
    return FlatGradNormOptimizer(optimizer, model_chunks)
